"""The demo under load (tiny random models, loopback): latency of one user alone against bursts of
many, side by side in one run.

    python benchmarks/demo_load.py [--users 8] [--concurrency 2] [--steps 25]

Each request is the Generate tab with a random identity (one image, its own seed). First one user
sends ``--users`` requests one after another; then ``--users`` users send one each at the same
moment, once with room for all of them in the queue and once with ``--max-queue`` places. Prints,
per phase: requests, served, refused ("queue is full"), other failures, p50 / p95 latency and their
ratios to the single user's.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gradio_client import Client

from idgen.application import ModelHub, ModelSettings
from idgen.demo import build_demo, launch


def request(client: Client, seed: int, steps: int) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        client.predict([], True, "arc2face", "", "", None, seed, steps, 3.0, 1, False, api_name="/generate")
        outcome = "served"
    except Exception as error:  # gradio_client raises the server's refusal
        outcome = "refused" if "queue is full" in str(error).lower() else f"failed: {error}"
    return outcome, time.perf_counter() - started


def burst(url: str, users: int, steps: int) -> list[tuple[str, float]]:
    clients = [Client(url, verbose=False) for _ in range(users)]
    with ThreadPoolExecutor(users) as pool:
        return list(pool.map(lambda k: request(clients[k], 1000 + k, steps), range(users)))


def summary(name: str, results: list[tuple[str, float]], reference: tuple[float, float] | None) -> tuple[float, float]:
    served = [seconds for outcome, seconds in results if outcome == "served"]
    refused = sum(outcome == "refused" for outcome, _ in results)
    failed = len(results) - len(served) - refused
    p50, p95 = (float(np.percentile(served, q)) for q in (50, 95)) if served else (float("nan"),) * 2
    ratio = f"{p50 / reference[0]:.2f}× / {p95 / reference[1]:.2f}×" if reference else "1× / 1×"
    print(f"| {name} | {len(results)} | {len(served)} | {refused} | {failed} | {p50:.2f} s / {p95:.2f} s | {ratio} |")
    return p50, p95


def serve(concurrency: int, max_queue: int):
    demo = build_demo(ModelHub(ModelSettings(tiny=True)))
    launch(demo, concurrency=concurrency, max_queue=max_queue, prevent_thread_lock=True, quiet=True)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()

    print(f"tiny models, --concurrency {args.concurrency}, {args.steps} steps per image")
    print("| phase | requests | served | refused | failed | p50 / p95 latency | vs one user |\n|---|---|---|---|---|---|---|")
    roomy = serve(args.concurrency, max_queue=4 * args.users)
    try:
        client = Client(roomy.local_url, verbose=False)
        request(client, 0, args.steps)   # warm-up: the first request loads the models
        alone = [request(client, k, args.steps) for k in range(args.users)]
        reference = summary("one user, sequential", alone, None)
        summary(f"{args.users} users at once, queue room for all", burst(roomy.local_url, args.users, args.steps), reference)
    finally:
        roomy.close()
    tight = serve(args.concurrency, args.max_queue)
    try:
        request(Client(tight.local_url, verbose=False), 0, args.steps)
        summary(f"{args.users} users at once, --max-queue {args.max_queue}", burst(tight.local_url, args.users, args.steps),
                reference)
    finally:
        tight.close()


if __name__ == "__main__":
    main()
