"""Dataset engine vs the naive loop, same generator, steps and filter, in one run.

    python benchmarks/synth_throughput.py [--identities 24] [--images 4] [--steps 4] [--batch-size 16]

Generator (the same for both): a random-initialised tiny diffusers ``UNet2DModel`` run for
``--steps`` DDIM steps on one 4×32×32 latent per image (real batched network compute, the cost
model of a diffusion generator), after which the picture itself comes from
:class:`PhotoJitterGenerator` (a vendored LFW photo with seeded jitter, a quarter scrambled into
faceless tiles) so the filter has real faces to judge. It is not a face diffusion model.
Filter: dlib detection + MobileFaceNet, threshold 0.4, up to 3 retries.

- naive: for each identity, one generator call for its images, then analysis, filtering and
  writing in series; rejected images regenerated the same way.
- engine: ``DatasetEngine.run_shard``: generator batches across identities, analysis/filtering/
  writing on a worker thread overlapping the next batch.

Prints images/s of each, the ratio, and where the time goes.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

from idgen.synth import PhotoJitterGenerator, SynthConfig
from idgen.synth.dataset import build_filter
from idgen.synth.engine import DatasetEngine, _IdentityProgress
from idgen.synth.identities import sample_identities
from idgen.synth.journal import Journal

ROOT = Path(__file__).resolve().parents[1]


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


class TinyUNetPhotoGenerator:
    """Real batched UNet compute per image, then the jittered photo (see the module docstring)."""

    def __init__(self, steps: int):
        from diffusers import DDIMScheduler, UNet2DModel

        torch.manual_seed(0)
        self.unet = UNet2DModel(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D")).eval()
        self.scheduler = DDIMScheduler(num_train_timesteps=1000)
        self.steps = steps
        self.photos = PhotoJitterGenerator(ROOT / "tests" / "data" / "faces", size=200, failure_rate=0.25)

    @torch.no_grad()
    def __call__(self, id_embeds, generators, **conditions):
        latents = torch.stack([torch.randn(4, 32, 32, generator=g) for g in generators])
        self.scheduler.set_timesteps(self.steps)
        for t in self.scheduler.timesteps:
            latents = self.scheduler.step(self.unet(latents, t).sample, t, latents).prev_sample
        return self.photos(id_embeds, generators)


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
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mobilefacenet", default=str(ROOT.parent / "shared" / "models" / "mobilefacenet" / "MobileFaceNet.onnx"))
    args = parser.parse_args()

    results = {}
    for mode in ("naive", "engine"):
        with tempfile.TemporaryDirectory() as folder:
            config = SynthConfig.load(None, [
                f"output={folder}", f"identities.count={args.identities}", f"variation.images_per_identity={args.images}",
                f"filter.recognizer=mobilefacenet:{args.mobilefacenet}", "filter.threshold=0.4",
                f"runtime.batch_size={args.batch_size}", "runtime.progress=false",
            ])
            timer = Timer()
            generator = TinyUNetPhotoGenerator(args.steps)
            image_filter = build_filter(config)
            engine = DatasetEngine(config, timer.wrap("generate", generator), image_filter)
            image_filter.embed = timer.wrap("analyse (detect+embed)", image_filter.embed)
            engine._write_image = timer.wrap("encode+write", engine._write_image)
            engine.targets, _ = sample_identities(args.identities, 512, 0.3, seed=0)
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

    print(f"{args.identities} identities x {args.images} images, {args.steps} UNet steps, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    for mode, (rate, wall, kept, seconds) in results.items():
        parts = ", ".join(f"{name} {value:.1f} s ({100 * value / wall:.0f} %)" for name, value in seconds.items())
        print(f"{mode:<7} {rate:6.2f} images/s  ({kept} images in {wall:.1f} s; {parts})")
    print(f"engine / naive: {results['engine'][0] / results['naive'][0]:.2f}x")


if __name__ == "__main__":
    main()
