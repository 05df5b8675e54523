"""Training speed of the embedded model's denoiser against transformer denoisers, float32 and bfloat16, side by side.

    python benchmarks/mini_denoiser.py [--batch 64] [--rounds 5] [--threads 2] [--output-file results.json]

Each candidate takes the mini model's inputs (4×16×16 latents, 77 text states of width 192, a timestep)
and one training step is forward + backward + AdamW on a batch of random inputs, under float32 or
``torch.autocast("cpu", torch.bfloat16)``. Candidates:

- ``unet``: the shipped UNet (``idgen/weights/mini-arc2face/unet/config.json``);
- ``dit-t/2``: diffusers' ``PixArtTransformer2DModel`` (cross-attention to the text states, adaLN-single
  timestep conditioning), width 256, 8 layers, 4 heads, on 2×2 patches (64 tokens): 1.4× the UNet's
  FLOPs (1.12 against 0.80 GFLOP per sample), the nearest like-for-like transformer;
- ``dit-s/2``, ``dit-s/1``: the same at DiT-S size (width 384, 12 layers, 6 heads), on 2×2 patches
  (64 tokens) or single latent pixels (256 tokens).

The modes run round-robin (``--rounds`` times each, a few steps per turn) so that load from other
processes falls on all of them alike; the median per mode is reported. Forward FLOPs per sample come
from ``torch.utils.flop_counter``; a training step is counted as 3× the forward. Printed and written
to ``--output-file``: parameters, GFLOP per sample-step, samples/s, achieved GFLOP/s, and the bfloat16 /
float32 speed ratio of each candidate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from idgen.io import write_json_atomic

UNET_CONFIG = Path(__file__).resolve().parents[1] / "idgen" / "weights" / "mini-arc2face" / "unet" / "config.json"
TEXT_WIDTH, TEXT_TOKENS, LATENT = 192, 77, 16


def transformer(heads: int, layers: int, patch_size: int) -> PixArtTransformer2DModel:
    """A PixArt transformer of width ``64 * heads`` over the mini model's latents and text states."""
    return PixArtTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=64, num_layers=layers, in_channels=4, out_channels=4,
        cross_attention_dim=64 * heads, caption_channels=TEXT_WIDTH, sample_size=LATENT, patch_size=patch_size,
        use_additional_conditions=False)


def candidates() -> dict[str, torch.nn.Module]:
    unet = UNet2DConditionModel.from_config(json.loads(UNET_CONFIG.read_text()))
    return {"unet": unet, "dit-t/2": transformer(4, 8, 2), "dit-s/2": transformer(6, 12, 2),
            "dit-s/1": transformer(6, 12, 1)}


def predict(model, latents, states, timesteps):
    if isinstance(model, PixArtTransformer2DModel):
        return model(latents, encoder_hidden_states=states, timestep=timesteps,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    return model(latents, timesteps, encoder_hidden_states=states).sample


def forward_gflop(model, batch) -> float:
    """Forward GFLOP per sample."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        predict(model, *batch)
    return counter.get_total_flops() / batch[0].shape[0] / 1e9


class Trainer:
    """One candidate in one precision: a training step on fixed random inputs."""

    def __init__(self, model, batch, bf16: bool):
        self.model, self.batch, self.bf16 = model.train(), batch, bf16
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(self) -> None:
        latents = self.batch[0]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            prediction = predict(self.model, *self.batch)
        loss = torch.nn.functional.mse_loss(prediction.float(), latents)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def random_batch(size: int, generator: torch.Generator):
    return (torch.randn(size, 4, LATENT, LATENT, generator=generator),
            torch.randn(size, TEXT_TOKENS, TEXT_WIDTH, generator=generator),
            torch.randint(0, 1000, (size,), generator=generator))


def time_round_robin(trainers: dict[str, Trainer], rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each trainer, the trainers taking turns."""
    for trainer in trainers.values():
        trainer.step()                                   # warm-up: allocations, kernel selection
    seconds = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            seconds[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in seconds.items()}


def report(models, gflop, step_seconds, batch_size) -> dict:
    rows = {}
    print(f"{'candidate':<10} {'params':>8} {'GFLOP':>6} {'fp32 smp/s':>11} {'bf16 smp/s':>11} "
          f"{'fp32 GF/s':>10} {'bf16 GF/s':>10} {'bf16/fp32':>9}")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        fp32, bf16 = (batch_size / step_seconds[f"{name} {p}"] for p in ("fp32", "bf16"))
        train_gflop = 3 * gflop[name]
        rows[name] = {"params_m": params, "forward_gflop_per_sample": gflop[name],
                      "samples_per_s": {"fp32": fp32, "bf16": bf16},
                      "achieved_gflop_per_s": {"fp32": fp32 * train_gflop, "bf16": bf16 * train_gflop},
                      "bf16_speedup": bf16 / fp32}
        print(f"{name:<10} {params:>7.2f}M {gflop[name]:>6.2f} {fp32:>11.1f} {bf16:>11.1f} "
              f"{fp32 * train_gflop:>10.0f} {bf16 * train_gflop:>10.0f} {bf16 / fp32:>8.2f}×")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per turn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-file", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = random_batch(args.batch, torch.Generator().manual_seed(0))
    models = candidates()
    gflop = {name: forward_gflop(model, tuple(t[:1] for t in batch)) for name, model in models.items()}
    trainers = {f"{name} {precision}": Trainer(model, batch, precision == "bf16")
                for name, model in models.items() for precision in ("fp32", "bf16")}
    step_seconds = time_round_robin(trainers, args.rounds, args.steps)
    rows = report(models, gflop, step_seconds, args.batch)
    if args.output_file:
        write_json_atomic(args.output_file, {"batch": args.batch, "threads": args.threads, "candidates": rows})


if __name__ == "__main__":
    main()
