"""Seconds per optimiser step of the demo's Forget → Recogniser run, and its estimate against its wall time.

    python benchmarks/forget_recognizer_steps.py [--faces ../shared/data/orl] [--base-epochs 40] [--epochs 10]

Runs :func:`idgen.application.actions.forget_in_recognizer` (the tab's job: the ``cpu-tiny`` Face
Transformer trained on the photos, then GS-LoRA forgetting one drawn person) on ``--faces``, timing
every optimiser step. It prints the mean wall and CPU seconds (all threads of the process) per
training and per forgetting step, the plan the page shows before the run starts (its estimate) and
the run's wall time. :data:`~idgen.application.actions.RECOGNIZER_STEP_SECONDS` holds the CPU
seconds: the wall time of an idle core, whatever else the machine ran during the measurement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from idgen.application import ModelHub, ModelSettings, actions
from idgen.application.face_folders import FaceFolder
from idgen.application.jobs import optimizer_steps
from idgen.application.workspace import FolderLRU

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", default=str(ROOT.parent / "shared" / "data" / "orl"),
                        help="a folder of one sub-folder of photos per person")
    parser.add_argument("--base-epochs", type=int, default=40, help="the tab's default recogniser training epochs")
    parser.add_argument("--epochs", type=int, default=10, help="the tab's default forgetting epochs")
    args = parser.parse_args()

    stamps, plans = [], []
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter(), time.process_time()
        with optimizer_steps(lambda: stamps.append((time.perf_counter(), time.process_time()))):
            actions.forget_in_recognizer(
                ModelHub(ModelSettings(tiny=True)), FaceFolder(Path(args.faces), "faces"), Path(work),
                FolderLRU(Path(work) / "cache", 1), base_epochs=args.base_epochs, epochs=args.epochs,
                progress=lambda fraction, desc=None: plans.append(desc))
        wall = time.perf_counter() - started[0]
    plan = plans[0]   # the plan the page shows before the run starts
    training = int(plan.split("(the long part: ")[1].split(" steps")[0])
    print(f"plan shown before the run: {plan}")
    print(f"optimiser steps: {len(stamps)} ({training} training)")
    for clock, name in ((0, "wall"), (1, "CPU")):
        gaps = [b[clock] - a[clock] for a, b in zip([started, *stamps], stamps)]
        print(f"{name} seconds per step: training {sum(gaps[1:training]) / (training - 1):.3f}, "
              f"forgetting {sum(gaps[training + 1:]) / max(1, len(gaps) - training - 1):.3f} "
              "(the first step of each part, which includes loading or evaluating, left out)")
    print(f"wall time of the run: {wall:.0f} s")


if __name__ == "__main__":
    main()
