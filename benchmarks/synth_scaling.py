"""The dataset command on 1 and 2 processes (and 2 "machines" on loopback): images/s of each, in one run.

    python benchmarks/synth_scaling.py [--identities 16] [--images 4] [--steps 10] [--rounds 1]

Each setting runs the real command, ``accelerate launch [--num_machines 2 --machine_rank R] -m idgen.cli
dataset generate``, on the embedded mini model (``generator.type: mini``, the filter a mini dataset
gets), one torch thread per process, into a new folder. Printed per run:

- *wall*: kept images over the whole command (interpreter and model start-up and assembly included);
- *generation*: renders (kept or rejected: ``stats.json``'s ``generated``) over the time from
  ``identities.safetensors`` (written by process 0 once its model is loaded) to the last journal
  line, i.e. the part that grows with the dataset. Renders, not kept images: at the mini filter's
  threshold few are kept, and which ones does not depend on the process count.

The load average before and after each run is printed too: on a machine shared with other jobs the
processes compete with them for cores, and the ratio says little beyond this machine at that time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mini_identity import mini_dataset_settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launches(processes: int, machines: int) -> list[list[str]]:
    """The launcher command of each machine for ``processes`` processes in all."""
    if processes == 1:
        return [[sys.executable]]
    port = free_port()
    return [[sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
             "--num_machines", str(machines), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
             "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
            for rank in range(machines)]


def run(processes: int, machines: int, settings: list[str]) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as folder:
        load = os.getloadavg()[0]
        start = time.time()
        running = [subprocess.Popen([*launch, "-m", "idgen.cli", "dataset", "generate", f"output_dir={folder}",
                                     *settings], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for launch in launches(processes, machines)]
        for process in running:
            _, error = process.communicate()
            if process.returncode:
                sys.exit(error.decode()[-3000:])
        wall = time.time() - start
        out = Path(folder)
        kept = len(list((out / "images").rglob("*.jpg")))
        renders = json.loads((out / "stats.json").read_text())["counts"]["generated"]
        generation = max(p.stat().st_mtime for p in (out / "journal").iterdir()) - \
            (out / "identities.safetensors").stat().st_mtime
    return {"kept": kept, "renders": renders, "wall": wall, "generation": generation, "load": (load, os.getloadavg()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=16)
    parser.add_argument("--images", type=int, default=4, help="images per identity")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each setting (the best is kept)")
    args = parser.parse_args()

    settings = [*mini_dataset_settings(args.steps, 3.0), f"identities.count={args.identities}",
                f"variation.images_per_identity={args.images}", "runtime.progress=false"]
    print(f"mini model, {args.identities} identities x {args.images} images, {args.steps} steps, 1 torch thread per "
          f"process, {os.cpu_count()} CPUs on this machine")
    rates = {}
    for name, processes, machines in (("1 process", 1, 1), ("2 processes", 2, 1), ("2 machines x 1 process", 2, 2)):
        best = min((run(processes, machines, settings) for _ in range(args.rounds)), key=lambda r: r["generation"])
        rates[name] = best["renders"] / best["generation"]
        print(f"{name:<24} {best['kept'] / best['wall']:5.3f} kept images/s wall ({best['kept']} in {best['wall']:.0f} s), "
              f"{rates[name]:5.3f} renders/s generation ({best['renders']} in {best['generation']:.0f} s); "
              f"load average {best['load'][0]:.1f} before, {best['load'][1]:.1f} after")
    for name in list(rates)[1:]:
        print(f"{name} / 1 process (generation): {rates[name] / rates['1 process']:.2f}x")


if __name__ == "__main__":
    main()
