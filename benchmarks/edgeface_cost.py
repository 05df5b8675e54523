"""EdgeFace beside MobileFaceNet: parameters, MFLOPs and CPU latency per face, in one run.

    python benchmarks/edgeface_cost.py [--variants xs_gamma_06 s_gamma_05] [--threads 1] [--rounds 5]

Every network is the one idgen builds (random weights: cost does not depend on them) for 112×112
crops: MobileFaceNet as ``idgen recognizer train --architecture mobilefacenet`` trains it (128-d),
EdgeFace as the published variants (512-d). FLOPs are torch's FLOP counter
(``torch.utils.flop_counter``: convolutions and matrix products, two per multiply-add). Latency is the
median over ``rounds`` of the mean time of one forward pass in eval mode under ``no_grad``, for one face
(batch 1) and per face in a batch of 32; the networks take turns within every round, so a busy machine
slows them alike. Prints one row per network and each EdgeFace's ratios to MobileFaceNet.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from idgen.models import EDGEFACE_VARIANTS, EdgeFace, MobileFaceNet

SIDE = 112


def networks(variants: list[str]) -> dict[str, torch.nn.Module]:
    """MobileFaceNet, then each EdgeFace variant, in eval mode."""
    built = {"mobilefacenet": MobileFaceNet(embedding_size=128, resolution=SIDE)}
    built.update({f"edgeface-{v}": EdgeFace(v, resolution=SIDE) for v in variants})
    return {name: model.eval() for name, model in built.items()}


def mflops(model: torch.nn.Module, side: int = SIDE) -> float:
    """Millions of FLOPs of one forward pass on one side×side face."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    return counter.get_total_flops() / 1e6


@torch.no_grad()
def latencies(models: dict[str, torch.nn.Module], batch: int, rounds: int, calls: int = 10,
              side: int = SIDE) -> dict[str, float]:
    """Median over ``rounds`` of the mean milliseconds per face of ``calls`` forward passes on ``batch`` faces."""
    images = torch.rand(batch, 3, side, side) * 2 - 1
    for model in models.values():   # warm-up
        model(images)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(calls):
                model(images)
            times[name].append((time.perf_counter() - start) / calls / batch * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["xs_gamma_06", "s_gamma_05"], choices=list(EDGEFACE_VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    models = networks(args.variants)
    one = latencies(models, 1, args.rounds)
    many = latencies(models, 32, args.rounds)
    rows = {name: (sum(p.numel() for p in model.parameters()) / 1e6, mflops(model), one[name], many[name])
            for name, model in models.items()}
    print(f"{SIDE}×{SIDE} crops, {args.threads} CPU thread(s), median of {args.rounds} rounds")
    print(f"{'network':<24}{'params (M)':>11}{'MFLOPs':>9}{'ms/face b=1':>13}{'ms/face b=32':>14}")
    for name, (params, flops, single, batched) in rows.items():
        print(f"{name:<24}{params:>11.3f}{flops:>9.1f}{single:>13.2f}{batched:>14.2f}")
    base = rows["mobilefacenet"]
    for name, row in rows.items():
        if name != "mobilefacenet":
            ratios = "  ".join(f"{label} {value / reference:.2f}×" for label, value, reference
                               in zip(("params", "MFLOPs", "b=1", "b=32"), row, base))
            print(f"{name} / mobilefacenet: {ratios}")


if __name__ == "__main__":
    main()
