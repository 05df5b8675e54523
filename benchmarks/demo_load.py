"""The demo under load (tiny random models, loopback): latency of one user alone against many users
at once, side by side in one run, as a markdown table.

    python benchmarks/demo_load.py [--users 8] [--requests 2] [--concurrency 2] [--max-queue 2] [--steps 25]

Each request is the Generate tab with a random identity (one image, its own seed), sent through
gradio_client as a visitor's browser would; its latency runs from sending to the image arriving
(queue wait included). Phases, each on a fresh server with the models loaded by a warm-up request:

1. one user sends ``--users`` × ``--requests`` requests one after another: the reference;
2. ``--users`` users at once, each sending ``--requests`` one after another, with queue room for all;
3. the same with ``--max-queue`` places: the excess is refused ("queue is full").

Per phase: users, requests, served, refused, other failures, wall time, served per second, p50 / p95
latency of the served requests and their ratios to the reference's (same run, same machine).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # tiny models: nothing to download

from gradio_client import Client  # noqa: E402

from idgen.application import ModelHub, ModelSettings  # noqa: E402
from idgen.demo import build_demo, launch  # noqa: E402


def request(client: Client, seed: int, steps: int) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        client.predict([], True, "arc2face", "", "", None, seed, steps, 3.0, 1, False, api_name="/generate")
        outcome = "served"
    except Exception as error:  # gradio_client raises the server's refusal
        outcome = "refused" if "queue is full" in str(error).lower() else f"failed: {type(error).__name__}: {error}"
    return outcome, time.perf_counter() - started


def load(url: str, users: int, requests: int, steps: int) -> tuple[list[tuple[str, float]], float]:
    """``users`` users at once, each sending ``requests`` one after another; outcomes and wall time."""
    clients = [Client(url, verbose=False) for _ in range(users)]   # connected before the clock starts

    def user(k: int):
        return [request(clients[k], 1000 + k * requests + r, steps) for r in range(requests)]

    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        results = [outcome for outcomes in pool.map(user, range(users)) for outcome in outcomes]
    return results, time.perf_counter() - started


class Table:
    HEADER = ("| phase | users | requests | served | refused | failed | wall | served/s | p50 / p95 latency "
              "| p50 / p95 vs one user |\n|---|---|---|---|---|---|---|---|---|---|")

    def __init__(self):
        self.rows, self.failures, self.reference = [], [], None

    def add(self, name: str, users: int, results: list[tuple[str, float]], wall: float) -> None:
        served = [seconds for outcome, seconds in results if outcome == "served"]
        refused = sum(outcome == "refused" for outcome, _ in results)
        failures = [outcome for outcome, _ in results if outcome not in ("served", "refused")]
        self.failures += [f"{name}: {f}" for f in failures]
        p50, p95 = (float(np.percentile(served, q)) for q in (50, 95)) if served else (float("nan"),) * 2
        if self.reference is None:
            self.reference, ratio = (p50, p95), "1× / 1×"
        else:
            ratio = f"{p50 / self.reference[0]:.2f}× / {p95 / self.reference[1]:.2f}×"
        self.rows.append(f"| {name} | {users} | {len(results)} | {len(served)} | {refused} | {len(failures)} | "
                         f"{wall:.1f} s | {len(served) / wall:.2f} | {p50:.2f} s / {p95:.2f} s | {ratio} |")

    def print(self, title: str) -> None:
        print("\n" + title + "\n\n" + self.HEADER + "\n" + "\n".join(self.rows))
        for failure in self.failures[:10]:
            print(f"\n- {failure}")


def serve(concurrency: int, max_queue: int, steps: int):
    demo = build_demo(ModelHub(ModelSettings(tiny=True)))
    launch(demo, concurrency=concurrency, max_queue=max_queue, prevent_thread_lock=True, quiet=True)
    client = Client(demo.local_url, verbose=False)
    for seed in range(2):   # warm-up: the first request loads the models, the second runs warm
        request(client, seed, steps)
    return demo


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="users sending at the same time")
    parser.add_argument("--requests", type=int, default=2, help="requests per user, one after another")
    parser.add_argument("--concurrency", type=int, default=2, help="the demo's --concurrency")
    parser.add_argument("--max-queue", type=int, default=2, help="the demo's --max-queue in the last phase")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per image")
    args = parser.parse_args()
    started = time.perf_counter()
    total = args.users * args.requests
    table = Table()

    demo = serve(args.concurrency, 4 * total, args.steps)
    try:
        client = Client(demo.local_url, verbose=False)
        begun = time.perf_counter()
        alone = [request(client, k, args.steps) for k in range(total)]
        table.add("one user, one request after another", 1, alone, time.perf_counter() - begun)
        table.add("users at once, queue room for all", args.users, *load(demo.local_url, args.users, args.requests,
                                                                       args.steps))
    finally:
        demo.close()
    demo = serve(args.concurrency, args.max_queue, args.steps)
    try:
        table.add(f"users at once, --max-queue {args.max_queue}", args.users,
                  *load(demo.local_url, args.users, args.requests, args.steps))
    finally:
        demo.close()

    table.print(f"Tiny models, loopback, --concurrency {args.concurrency}, {args.steps} steps per image, "
                f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; latency from sending to the image "
                f"(queue wait included). Whole run: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
