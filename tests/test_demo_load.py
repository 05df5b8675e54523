"""The demo under load, on loopback with tiny random models: a burst of users larger than
``--concurrency`` + ``--max-queue`` is either served or refused with a clear "queue is full", every
served request gets exactly its own seed's image, and the server stays up with bounded memory."""

from __future__ import annotations

import resource
import time

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from idgen.application import ModelHub, ModelSettings, actions  # noqa: E402
from idgen.demo import build_demo, launch  # noqa: E402

CONCURRENCY, MAX_QUEUE, USERS, STEPS = 2, 2, 8, 25


@pytest.fixture(scope="module")
def busy_server(one_thread):
    hub = ModelHub(ModelSettings(tiny=True))
    demo = build_demo(hub)
    launch(demo, concurrency=CONCURRENCY, max_queue=MAX_QUEUE, prevent_thread_lock=True, quiet=True)
    try:
        yield hub, demo.local_url
    finally:
        demo.close()


def burst(url: str, seeds: list[int]) -> dict:
    """Every user submits one random-identity generation at once; seed → pixels, or the refusal."""
    clients = [Client(url, verbose=False) for _ in seeds]    # connected before the burst starts
    jobs = [client.submit([], True, "arc2face", "", "", None, seed, STEPS, 3.0, 1, False, api_name="/generate")
            for client, seed in zip(clients, seeds)]
    outcomes = {}
    for seed, job in zip(seeds, jobs):
        try:
            gallery = job.result(timeout=300)[0]
            image = gallery[0]["image"]
            outcomes[seed] = np.asarray(Image.open(image if isinstance(image, str) else image["path"]).convert("RGB"))
        except Exception as error:  # gradio_client raises the server's refusal as an exception
            outcomes[seed] = str(error)
    return outcomes


def own_image(hub, seed: int) -> np.ndarray:
    """What one user alone gets for ``seed`` (the page's Generate with 'random identity')."""
    identity = actions.random_identity(hub, seed)
    image, _ = actions.generate_images(hub, identity, count=1, seed=seed, steps=STEPS, guidance=3.0)[0]
    return np.asarray(image.convert("RGB"))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kilobytes


def test_a_burst_beyond_the_queue_is_served_or_refused_and_nothing_leaks(busy_server):
    hub, url = busy_server
    first = burst(url, list(range(USERS)))
    after_first = rss_mb()
    served = {seed: pixels for seed, pixels in first.items() if isinstance(pixels, np.ndarray)}
    refused = {seed: message for seed, message in first.items() if isinstance(message, str)}
    assert len(served) >= CONCURRENCY and len(served) + len(refused) == USERS
    assert all("queue is full" in message.lower() for message in refused.values()), refused
    assert refused, "a burst of 8 on 2 workers + 2 queue places should overflow the queue"
    for seed, pixels in served.items():   # each request got its own seed's image, not a neighbour's
        np.testing.assert_array_equal(pixels, own_image(hub, seed), err_msg=f"seed {seed}")

    second = burst(url, list(range(100, 100 + USERS)))   # the server is still up and serving
    assert any(isinstance(pixels, np.ndarray) for pixels in second.values())
    assert rss_mb() - after_first < 200, "memory kept growing from one burst to the next"
    time.sleep(0.5)
    alone = burst(url, [7])[7]
    np.testing.assert_array_equal(alone, own_image(hub, 7))
