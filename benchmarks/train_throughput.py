"""Training-step speed and peak memory with and without gradient checkpointing, side by side.

    python benchmarks/train_throughput.py            # reduced SD 1.5 UNet on CPU (each mode in its own process)
    python benchmarks/train_throughput.py --full     # SD 1.5-size UNet at 512² on a GPU, fp16 autocast

One training step = LoRA (rank 16, attention) forward + backward + AdamW step of the UNet on random
latents and text states, as in ``training/train.py``. Peak memory is ``torch.cuda.max_memory_allocated``
on a GPU and, on CPU, the growth of the process's peak resident set over what it held before the
first step (so each mode runs in a fresh process; the model itself is not counted). Prints steps/s, peak memory and the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

#: Same layout as SD 1.5 (4 levels, 3 with cross-attention, 2 layers each) at 1/10 of the width.
REDUCED_UNET = {"block_out_channels": [32, 64, 128, 128], "cross_attention_dim": 768, "sample_size": 32}


def measure(checkpointing: bool, full: bool, steps: int, batch: int) -> dict:
    from idgen.testing.sd15_architecture import SD15_UNET_CONFIG
    from idgen.training import add_lora
    from idgen.training.config import GeneratorLoraConfig
    from diffusers import UNet2DConditionModel

    device = torch.device("cuda" if full else "cpu")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**SD15_UNET_CONFIG, **({} if full else REDUCED_UNET)})
    params = add_lora(unet, GeneratorLoraConfig(rank=16), GeneratorLoraConfig().unet_targets)
    unet.to(device, dtype=torch.float16 if full else torch.float32)
    for p in params:
        p.data = p.data.float()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    size = unet.config.sample_size
    latents = torch.randn(batch, 4, size, size, device=device)
    states = torch.randn(batch, 77, 768, device=device)
    timesteps = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=full):
            loss = torch.nn.functional.mse_loss(unet(latents, timesteps, states).sample.float(), latents)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if full:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()  # warm-up (allocator, kernels); its memory counts, its time does not
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if full:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if full else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"steps_per_s": steps / elapsed, "peak_mib": peak / 2**20, "over_start_mib": (peak - base) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD 1.5-size UNet at 64×64 latents on a GPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 3 CPU, 20 GPU)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 2 CPU, 8 GPU)")
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)  # child process: one mode
    args = parser.parse_args()
    steps = args.steps or (20 if args.full else 3)
    batch = args.batch or (8 if args.full else 2)
    if args.one:
        print(json.dumps(measure(args.one == "on", args.full, steps, batch)))
        return
    results = {}
    for mode in ("off", "on"):
        command = [sys.executable, __file__, "--one", mode, "--steps", str(steps), "--batch", str(batch)]
        output = subprocess.run(command + (["--full"] if args.full else []), check=True, capture_output=True,
                                text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    what = "SD 1.5 UNet, 64×64 latents, fp16 autocast, GPU" if args.full else "reduced SD 1.5 UNet, 32×32 latents, fp32, CPU"
    print(f"{what}; batch {batch}; LoRA rank 16 on attention; {steps} timed steps")
    print(f"{'gradient checkpointing':<24}{'steps/s':>10}{'peak MiB':>12}{'growth MiB':>12}")
    for mode in ("off", "on"):
        r = results[mode]
        print(f"{mode:<24}{r['steps_per_s']:>10.3f}{r['peak_mib']:>12.0f}{r['over_start_mib']:>12.0f}")
    off, on = results["off"], results["on"]
    print(f"checkpointing: speed ×{on['steps_per_s'] / off['steps_per_s']:.2f}, "
          f"memory growth ×{on['over_start_mib'] / max(off['over_start_mib'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
