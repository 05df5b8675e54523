"""Dataset engine vs the naive loop, same generator, steps, filter and seeds, in one run.

    python benchmarks/synth_throughput.py [--identities 24] [--images 4] [--steps 10] [--batch-size 32]

Generator (the same loaded model for both): the embedded mini model (``generator.type: mini``,
:mod:`idgen.pipelines.mini`), 64×64 renders of 128-d identity vectors, ``--steps`` denoising steps
at guidance 3. Filter: what a ``generator.type: mini`` dataset gets (:func:`~idgen.synth.dataset.build_filter`):
dlib detection on a 3× upscaled copy + the shipped MobileFaceNet (flip-summed), the mini model's
default threshold, up to 3 retries.

- naive: for each identity, one generator call for its images (one pipeline call: the adapter's
  ``micro_batch`` is ``--images``), then analysis, filtering and writing in series; rejected images
  regenerated the same way.
- engine: ``DatasetEngine.run_shard``: generator batches across identities (pipeline calls of the
  default ``generator.micro_batch``), analysis/filtering/writing on a worker thread overlapping the
  next batch.

Prints images/s of each (kept images over wall time), the ratio, and where the time goes: the
share of wall time the generator was busy, and the time spent in analysis and writing (in the
engine these run alongside the generator).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

from idgen.synth import SynthConfig
from idgen.synth.dataset import build_filter
from idgen.synth.engine import DatasetEngine, _IdentityProgress
from idgen.synth.generators import Arc2FaceGenerator, build_generator
from idgen.synth.identities import sample_identities
from idgen.synth.journal import Journal
from mini_identity import mini_dataset_settings


class Timer:
    """Seconds spent inside wrapped calls, per name, from any thread."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.lock = threading.Lock()

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds[name] += time.perf_counter() - start
        return timed


def naive_loop(engine: DatasetEngine, identities: int, per_identity: int) -> None:
    """One generator call per identity; analysis, filtering and writing in series."""
    for identity in range(identities):
        progress = _IdentityProgress(per_identity)
        slots = [engine.make_slot(identity, n, 0) for n in range(per_identity)]
        while slots:
            for slot, image in zip(slots, engine.generate(slots)):
                progress.results[slot.index] = (slot, image)
            slots, _ = engine._finish_round(identity, progress)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=24)
    parser.add_argument("--images", type=int, default=4, help="images per identity")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--batch-size", type=int, default=32, help="the engine's images per generator call")
    args = parser.parse_args()

    settings = [*mini_dataset_settings(args.steps, 3.0), f"identities.count={args.identities}",
                f"variation.images_per_identity={args.images}", f"runtime.batch_size={args.batch_size}", "runtime.progress=false"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shared = SynthConfig.load(None, settings)
    generator = build_generator(shared.generator, device, identity_dim=shared.identities.dim)
    per_identity = Arc2FaceGenerator(generator.pipeline, micro_batch=args.images, **generator.call_kwargs)
    results = {}
    for mode in ("naive", "engine"):
        with tempfile.TemporaryDirectory() as folder:
            config = SynthConfig.load(None, [f"output_dir={folder}", *settings])
            timer = Timer()
            image_filter = build_filter(config)
            engine = DatasetEngine(config, timer.wrap("generate", per_identity if mode == "naive" else generator),
                                   image_filter)
            image_filter.embed = timer.wrap("analyse", image_filter.embed)
            engine._write_image = timer.wrap("write", engine._write_image)
            engine.targets, _ = sample_identities(args.identities, config.identities.dim, config.identities.max_cosine,
                                                  seed=0, progress=False)
            start = time.perf_counter()
            if mode == "naive":
                naive_loop(engine, args.identities, args.images)
            else:
                journal = Journal(Path(folder) / "journal").open()
                engine.run_shard(journal, set())
                journal.close()
            wall = time.perf_counter() - start
            kept = len(list(Path(folder, "images").rglob("*.jpg")))
            results[mode] = (kept / wall, wall, kept, dict(timer.seconds))

    print(f"mini model on {device}: {args.identities} identities x {args.images} images, {args.steps} steps, "
          f"engine batch {args.batch_size}, filter threshold {config.filter.threshold}, torch threads {torch.get_num_threads()}")
    for mode, (rate, wall, kept, seconds) in results.items():
        parts = ", ".join(f"{name} {value:.1f} s ({100 * value / wall:.0f} %)" for name, value in seconds.items())
        print(f"{mode:<7} {rate:6.2f} images/s  ({kept} images kept in {wall:.1f} s; "
              f"generator busy {100 * seconds['generate'] / wall:.0f} % of the wall time; {parts})")
    naive_rate = results["naive"][0]
    print(f"engine / naive: {results['engine'][0] / naive_rate:.2f}x" if naive_rate else
          "engine / naive: no ratio, the naive loop kept no image (raise --identities or --images)")


if __name__ == "__main__":
    main()
