"""Arc2FacePipeline (all identities in one call) vs the reference usage (stock
StableDiffusionPipeline, one call per identity with 4 images), same model, steps and resolution.

    python benchmarks/arc2face_throughput.py                 # reduced-width SD 1.5 on CPU
    python benchmarks/arc2face_throughput.py --full          # SD 1.5 architecture, bf16, 512², GPU

Weights are random (no checkpoint download needed); speed does not depend on them. Both runs get
the same per-image generators, and the script checks that they make the same images. Prints
images/s of each, the ratio, and with ``--full`` the peak GPU memory and the fraction of the GPU's
bf16 peak reached, counting 0.68 TFLOP per UNet sample-step at 512² and 2.5 TFLOP per VAE decode.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTokenizer

from idgen.identity import random_identities
from idgen.pipelines import Arc2FacePipeline
from idgen.testing.sd15_architecture import random_sd15_components

ROOT = Path(__file__).resolve().parents[1]
UNET_TFLOP_PER_SAMPLE_STEP = 0.68  # SD 1.5 UNet, one 64×64 latent
VAE_DECODE_TFLOP = 2.5  # SD 1.5 VAE decoder, one 512² image
#: Dense bf16 peak (TFLOP/s) of GPUs we may be lent; pass --peak-tflops for others.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}

REDUCED = {  # SD 1.5's shape with narrow layers, for CPUs
    "unet": {"block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 256},
    "text_encoder": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                     "num_attention_heads": 4, "projection_dim": 256},
    "vae": {"block_out_channels": [32, 64, 64, 64]},
}


def build(args, device, dtype) -> Arc2FacePipeline:
    parts = random_sd15_components(**({} if args.full else REDUCED))
    pipe = Arc2FacePipeline(**parts, tokenizer=CLIPTokenizer.from_pretrained(args.tokenizer), safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False)
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if args.compile:
        pipe.compile_unet(mode="max-autotune-no-cudagraphs")
    return pipe


def generators(n, device):
    return [torch.Generator(device).manual_seed(1000 + k) for k in range(n)]


def ours(pipe, ids, run):
    return pipe(id_embeds=ids, generator=generators(len(ids) * run["num_images_per_prompt"], pipe.device), **run).images


def reference(pipe, stock, ids, run):
    """What Arc2Face's README does: one call per identity, its prompt_embeds from the encoder."""
    per_id = run["num_images_per_prompt"]
    gens = generators(len(ids) * per_id, pipe.device)
    images = []
    for i in range(len(ids)):
        embeds = pipe.encode_identity(ids[i : i + 1])
        images.append(stock(prompt_embeds=embeds, generator=gens[i * per_id : (i + 1) * per_id], **run).images)
    return np.concatenate(images)


def measure(fn, device):
    """Seconds and peak GPU memory (GiB, None on CPU) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return seconds, peak, result


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full SD 1.5 architecture, bf16, on the GPU")
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--images-per-identity", type=int, default=4)
    parser.add_argument("--steps", type=int, help="default: 25 with --full, 10 on CPU")
    parser.add_argument("--size", type=int, help="image side in pixels; default: 512 with --full, 128 on CPU")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timed runs each")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (opt-in path)")
    parser.add_argument("--device", help="default: cuda with --full, else cpu")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    parser.add_argument("--tokenizer", default=str(ROOT.parent / "shared" / "models" / "clip-tokenizer"))
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if args.full else "cpu"))
    dtype = torch.bfloat16 if args.full else torch.float32
    steps = args.steps or (25 if args.full else 10)
    size = args.size or (512 if args.full else 128)

    pipe = build(args, device, dtype)
    stock = StableDiffusionPipeline(**pipe.components, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    ids = random_identities(args.identities, min(512, pipe.text_encoder.config.hidden_size),
                            generator=torch.Generator().manual_seed(0))
    run = dict(num_inference_steps=steps, guidance_scale=args.guidance, height=size, width=size,
               num_images_per_prompt=args.images_per_identity, output_type="np")
    n_images = args.identities * args.images_per_identity
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    print(f"{'full SD 1.5' if args.full else 'reduced-width SD 1.5'} on {where}"
          f" ({dtype}, {torch.get_num_threads()} CPU threads): {args.identities} identities × "
          f"{args.images_per_identity} images, {size}², {steps} steps, guidance {args.guidance}"
          f"{', torch.compile' if args.compile else ''}")

    warm = dict(run, num_inference_steps=1)  # kernels, allocator, compilation
    ours(pipe, ids, warm), reference(pipe, stock, ids, warm)
    results = {}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        for name, fn in (("reference", lambda: reference(pipe, stock, ids, run)), ("ours", lambda: ours(pipe, ids, run))):
            seconds, peak, images = measure(fn, device)
            if name not in results or seconds < results[name][0]:
                results[name] = (seconds, peak, images)
    difference = float(np.abs(results["ours"][2].astype(np.float32) - results["reference"][2].astype(np.float32)).max())

    cfg = 2 if args.guidance > 1 else 1
    tflop_per_image = steps * cfg * UNET_TFLOP_PER_SAMPLE_STEP * (size / 512) ** 2 + VAE_DECODE_TFLOP * (size / 512) ** 2
    peak = peak_tflops(args) if args.full and device.type == "cuda" else None
    print(f"{'':<34}{'images/s':>10}{'peak GiB':>10}{'of bf16 peak':>14}")
    for name, label in (("reference", "reference (1 call per identity)"), ("ours", "Arc2FacePipeline (1 call)")):
        seconds, memory, _ = results[name]
        rate = n_images / seconds
        mem = f"{memory:.1f}" if memory is not None else "-"
        frac = f"{rate * tflop_per_image / peak:.1%}" if peak else "-"
        print(f"{label:<34}{rate:>10.3f}{mem:>10}{frac:>14}")
    print(f"ratio ours/reference: {results['reference'][0] / results['ours'][0]:.2f}x; "
          f"max |image difference|: {difference:.2g}")


if __name__ == "__main__":
    main()
