"""How well `forget_identities` edits the tiny random Arc2Face text encoder, over several seeds.

    python benchmarks/generator_forgetting.py                    # the test's settings (60 steps)
    python benchmarks/generator_forgetting.py --steps 300 --seeds 0

Same tiny pipeline as ``tests/test_generator_forgetting.py`` (128-wide, 2-layer CLIP text encoder;
the real CLIP tokenizer from ``../shared/models/clip-tokenizer`` when it is there). Per seed, forget
2 random identities while retaining 6 others, then measure on an untouched copy, in units of each
vector's original distance from the neutral conditioning: ``to_neutral`` of the forgotten
identities (max) and of unseen vectors at cosine 0.9 / 0.7 to them (mean; 1 = untouched, 0 = the
neutral identity), the change of the retained and of 30 unseen random identities (mean), and the
relative change of the empty-prompt conditioning.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from idgen.demo.tiny import TINY_TEXT, TINY_UNET, TINY_VAE, letters_tokenizer
from idgen.identity import perturb, random_identities
from idgen.pipelines import Arc2FacePipeline
from idgen.pipelines.sd15_architecture import random_sd15_components
from idgen.unlearn.generator import forget_identities

CLIP_TOKENIZER = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "clip-tokenizer"


def tiny_pipeline() -> Arc2FacePipeline:
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER) if CLIP_TOKENIZER.exists() else letters_tokenizer()
    parts = random_sd15_components(unet=TINY_UNET, vae=TINY_VAE, text_encoder=TINY_TEXT, seed=0)
    return Arc2FacePipeline(**parts, tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                            image_encoder=None, requires_safety_checker=False)


def identities(n: int, seed: int) -> torch.Tensor:
    return random_identities(n, TINY_TEXT["hidden_size"], generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def conditioning(pipe, ids):
    return pipe.encode_identity(ids, device=torch.device("cpu")).flatten(1)


def measure(seed: int, steps: int, lr: float) -> dict[str, float]:
    original, pipe = tiny_pipeline(), tiny_pipeline()
    forget, retain = identities(2, 1 + 10 * seed), identities(6, 2 + 10 * seed)
    start = time.perf_counter()
    result = forget_identities(pipe, forget, retain=retain, steps=steps, lr=lr, warmup_steps=steps // 2,
                               nearby_per_identity=4, random_per_step=8, radius=0.5, show_progress=False)
    seconds = time.perf_counter() - start
    neutral = conditioning(original, result.neutral)

    def to_neutral(ids):
        return (conditioning(pipe, ids) - neutral).norm(dim=1) / (conditioning(original, ids) - neutral).norm(dim=1)

    def change(ids):
        before = conditioning(original, ids)
        return (conditioning(pipe, ids) - before).norm(dim=1) / (before - neutral).norm(dim=1)

    generator = torch.Generator().manual_seed(1234)
    row = {"forgotten": to_neutral(forget).max()}
    for cosine in (0.9, 0.7):
        row[f"nearby {cosine}"] = to_neutral(perturb(forget.repeat_interleave(5, 0), cosine, generator=generator)).mean()
    row["retained"], row["random"] = change(retain).mean(), change(identities(30, 99 + seed)).mean()
    tokens = pipe.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        after, before = pipe.text_encoder(tokens)[0], original.text_encoder(tokens)[0]
    row["empty"] = (after - before).norm() / before.norm()
    return {name: float(value) for name, value in row.items()} | {"seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    rows = [measure(seed, args.steps, args.lr) for seed in args.seeds]
    names = list(rows[0])
    print(f"{args.steps} steps, lr {args.lr}")
    print("| seed | " + " | ".join(names) + " |")
    for seed, row in zip(args.seeds, rows):
        print(f"| {seed} | " + " | ".join(f"{row[n]:.3f}" if n != "seconds" else f"{row[n]:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main()
