"""Cancelling the demo's long jobs: a job cancelled mid-way stops, leaves no half-written
output on disk, and the server serves the next request.

The server runs in this process, so its workspace (a ``tempfile.mkdtemp`` folder) is made in the
test's own folder and every file the jobs wrote can be listed."""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from idgen.application import ModelHub, ModelSettings, actions  # noqa: E402
from idgen.application.jobs import CancelToken, JobCancelled  # noqa: E402
from idgen.demo import build_demo, launch  # noqa: E402
from idgen.io import atomic_folder  # noqa: E402


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The process's temporary folder, for the module: where the demo's jobs make their folders."""
    folder = tmp_path_factory.mktemp("demo-temp")
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = previous


@pytest.fixture(scope="module")
def server(one_thread, scratch):
    hub = ModelHub(ModelSettings(tiny=True))
    demo = build_demo(hub)
    launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        yield hub, demo, Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def job_files(demo, kind: str) -> list[str]:
    """Every file and folder under the workspace's folders of ``kind`` requests."""
    requests = demo.workspace.root / "requests"
    return sorted(str(p.relative_to(requests)) for top in requests.glob(f"*-{kind}") for p in [top, *top.rglob("*")])


def people_in(archive: str) -> list[str]:
    """The identity folders of a dataset zip the Dataset tab returned."""
    with zipfile.ZipFile(archive) as z:
        return sorted({name.split("/")[1] for name in z.namelist() if name.startswith("images/") and "/" in name[7:]})


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def cancel_and_wait(job, timeout: float = 30) -> float:
    started = time.monotonic()
    job.cancel()   # what the page's Cancel button sends: POST /cancel for the running event
    wait_for(job.done, timeout, "the cancelled job to end")
    return time.monotonic() - started


def test_each_long_job_has_a_cancel_button_that_cancels_it(server):
    _, demo, _ = server
    config = demo.get_config_file()
    fns = {dep["id"]: dep for dep in config["dependencies"]}
    labels = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    cancelled_by = {}
    for dep in fns.values():
        for target in dep.get("cancels") or []:
            cancelled_by[fns[target]["api_name"]] = [labels[t[0]] for t in dep["targets"]]
    assert cancelled_by == {"dataset": ["Cancel"], "forget": ["Cancel"], "forget_generator": ["Cancel"]}


def test_a_cancelled_dataset_leaves_nothing_and_the_server_serves_the_next(server):
    _, demo, client = server
    requests = demo.workspace.root / "requests"
    job = client.submit(16, 8, 0, 10, api_name="/dataset")     # 128 images: long enough to catch mid-way
    staged = lambda: list(requests.glob("*-dataset/.dataset.*.partial/images/*/*.jpg"))  # noqa: E731
    written = wait_for(lambda: len(staged()) >= 4 and staged(), 240, "the dataset's first images")
    assert len(written) < 128 and not list(requests.glob("*-dataset/dataset"))   # mid-way, unpublished
    seconds = cancel_and_wait(job)
    assert job.status().code.name == "CANCELLED"
    assert seconds < 15, f"the job took {seconds:.1f} s to stop"
    assert job_files(demo, "dataset") == []     # no request folder, staging folder, dataset or zip
    time.sleep(1.0)   # a job still running in its thread would write its next batch (and recreate folders)
    assert job_files(demo, "dataset") == []

    samples, plot, archive, summary, source = client.predict(2, 2, 0, 1, api_name="/dataset")
    assert summary.startswith("4 images of 2 identities") and source == "dataset"
    [published] = requests.glob("*-dataset/dataset")
    assert len(list((published / "images").rglob("*.jpg"))) == 4
    assert not list(published.parent.glob(".dataset.*"))       # the finished set was renamed into place
    gallery = client.predict([], True, "arc2face", "", "", None, 3, 2, 3.0, 1, False, api_name="/generate")[0]
    assert len(gallery) == 1


def test_a_cancelled_recogniser_forgetting_leaves_nothing(server):
    from idgen.models.face_transformer import FaceRecognizer

    _, demo, client = server
    people = people_in(client.predict(4, 4, 1, 1, api_name="/dataset")[2])
    job = client.submit("dataset", None, people[0], 1, 60, 30, api_name="/forget")
    wait_for(lambda: any((unit.index or 0) >= 2 for unit in job.status().progress_data or []), 240,
             "the recogniser's training to be under way")
    cancel_and_wait(job)
    assert job.status().code.name == "CANCELLED"
    assert job_files(demo, "forget") == []     # no run folder, report or model
    time.sleep(1.0)
    assert job_files(demo, "forget") == []
    for weights in (demo.workspace.root / "cache").rglob("model.safetensors"):   # a cached recogniser is whole
        FaceRecognizer.from_pretrained(weights.parent)

    report, groups = client.predict("dataset", None, people[1], 1, 2, 2, api_name="/forget")
    assert people[1] in report and "gs-lora" in report and Path(groups).is_file()
    [run] = (demo.workspace.root / "requests").glob("*-forget/forgetting")     # the finished run, renamed into place
    assert (run / "report.json").is_file() and (run / "groups.png").is_file() and not (run / "journal").exists()
    assert not list(run.parent.glob(".forgetting.*"))


def test_a_cancelled_generator_forgetting_leaves_no_lora(server, tmp_path):
    """Cancelled after the LoRA was saved (while rendering): the half-done run publishes nothing."""
    hub, _, _ = server
    identity = actions.random_identity(hub, 5)
    before = np.asarray(actions.generate_images(hub, identity, seed=5, steps=2)[0][0])
    token, seen = CancelToken(), []

    def progress(fraction, desc=None):
        seen.append(desc)
        if desc.startswith("rendering the person before"):
            staging = list((tmp_path / "run").glob(".lora.*.partial"))
            assert len(staging) == 1 and (staging[0] / "pytorch_lora_weights.safetensors").is_file()
            token.cancel()

    with pytest.raises(JobCancelled):
        actions.forget_in_generator(hub, tmp_path / "run", seed=5, steps=20, render_steps=2,
                                    progress=progress, cancel=token)
    assert any(d.startswith("rendering the person before") for d in seen)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []      # no lora/, no staging, no zip
    # The shared pipeline was interrupted mid-call and still draws exactly what it drew before.
    assert np.array_equal(np.asarray(actions.generate_images(hub, identity, seed=5, steps=2)[0][0]), before)
    done = actions.forget_in_generator(hub, tmp_path / "again", seed=5, steps=20, render_steps=2)
    assert (done["folder"] / "pytorch_lora_weights.safetensors").is_file() and done["zip"].is_file()


def test_atomic_folder_publishes_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("stopped mid-way")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(target) as staging:
        (staging / "whole.txt").write_text("whole")
        assert not target.exists()          # nothing visible until the block ends
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "whole.txt").read_text() == "whole"
    with pytest.raises(FileExistsError):
        with atomic_folder(target):
            pass
