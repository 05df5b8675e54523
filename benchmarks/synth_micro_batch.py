"""What byte-identical datasets cost: fixed micro-batches vs one pipeline call per engine batch, in one run.

    python benchmarks/synth_micro_batch.py [--identities 16] [--images 4] [--steps 10] [--rounds 2] [--filter]

The dataset engine (``DatasetEngine.run_shard``, batches of 16 slots) on the embedded mini model,
the same loaded pipeline behind three adapters, run in turn ``--rounds`` times:

- one call per batch: the pipeline gets each engine batch whole, whatever its size (so an image's
  last bits depend on its batch: the adapters before fixed micro-batches);
- micro-batch 8: :class:`~idgen.synth.generators.FixedBatchAdapter`'s default, the last piece padded;
- micro-batch 1: every image alone.

Without ``--filter`` every slot is kept, so the engine's batches are full; with it the filter a mini
dataset gets rejects most renders and the retries come back in uneven batches, which the fixed
micro-batches pad. Prints, per adapter and best of the rounds, renders per second of wall time and
per CPU-second of this process (the steadier number on a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from idgen.synth import SynthConfig
from idgen.synth.dataset import build_filter
from idgen.synth.engine import DatasetEngine
from idgen.synth.generators import Arc2FaceGenerator, build_generator
from idgen.synth.identities import sample_identities
from idgen.synth.journal import Journal
from mini_identity import mini_dataset_settings


class OneCallPerBatch(Arc2FaceGenerator):
    """One pipeline call with the engine's whole batch."""

    def __call__(self, id_embeds, generators, **conditions):
        return self._render(id_embeds, generators, **conditions)


def run(settings: list[str], generator, targets) -> tuple[int, float, float]:
    """Renders, wall seconds and CPU seconds of one engine run."""
    with tempfile.TemporaryDirectory() as folder:
        config = SynthConfig.load(None, [f"output_dir={folder}", *settings])
        renders = []

        def counted(id_embeds, generators, **conditions):
            renders.append(len(id_embeds))
            return generator(id_embeds, generators, **conditions)

        engine = DatasetEngine(config, counted, build_filter(config))
        engine.targets = targets
        cpu, wall = time.process_time(), time.perf_counter()
        journal = Journal(Path(folder) / "journal").open()
        engine.run_shard(journal, set())
        journal.close()
        return sum(renders), time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=16)
    parser.add_argument("--images", type=int, default=4, help="images per identity")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--filter", action="store_true", help="filter as a mini dataset does (most renders retried)")
    args = parser.parse_args()

    settings = [*mini_dataset_settings(args.steps, 3.0), f"identities.count={args.identities}",
                f"variation.images_per_identity={args.images}", "runtime.batch_size=16", "runtime.progress=false",
                f"filter.enabled={str(args.filter).lower()}"]
    shared = SynthConfig.load(None, settings)
    model = build_generator(shared.generator, "cpu", identity_dim=shared.identities.dim)
    adapters = {"one call per batch": OneCallPerBatch(model.pipeline, **model.call_kwargs),
                "micro-batch 8": Arc2FaceGenerator(model.pipeline, micro_batch=8, **model.call_kwargs),
                "micro-batch 1": Arc2FaceGenerator(model.pipeline, micro_batch=1, **model.call_kwargs)}
    targets, _ = sample_identities(args.identities, shared.identities.dim, shared.identities.max_cosine, seed=0,
                                   progress=False)
    best = {}
    for _ in range(args.rounds):
        for name, adapter in adapters.items():
            renders, wall, cpu = run(settings, adapter, targets)
            if name not in best or cpu < best[name][2]:
                best[name] = (renders, wall, cpu)

    print(f"mini model on cpu: {args.identities} identities x {args.images} images, {args.steps} steps, engine batch 16, "
          f"filter {'on' if args.filter else 'off'}, torch threads {torch.get_num_threads()}, best of {args.rounds}")
    baseline = best["one call per batch"][0] / best["one call per batch"][2]
    for name, (renders, wall, cpu) in best.items():
        print(f"{name:<20} {renders} renders: {renders / wall:5.2f} /s wall, {renders / cpu:5.2f} per CPU-second "
              f"({renders / cpu / baseline:.2f}x)")


if __name__ == "__main__":
    main()
