"""How well `forget_identities` edits the tiny random Arc2Face text encoder, over several seeds.

    python benchmarks/generator_forgetting.py                    # the test's settings (120 steps)
    python benchmarks/generator_forgetting.py --steps 300 --seeds 0

Same tiny pipeline as ``tests/test_generator_forgetting.py`` (128-wide, 2-layer CLIP text encoder;
the real CLIP tokenizer from ``../shared/models/clip-tokenizer`` when it is there). Per seed, forget
2 random identities while retaining 6 others, then measure on an untouched copy, in units of each
vector's original distance from the neutral conditioning: ``to_neutral`` of the forgotten
identities (max) and of unseen vectors at cosine 0.9 / 0.7 to them (mean; 1 = untouched, 0 = the
neutral identity), the change of the retained and of 30 unseen random identities (mean, and max for
the random ones), the part of the random identities' change that is one shift shared by all of them
(``random shared``: the norm of their mean change, same units), and the relative change of the
empty-prompt conditioning.

Two references, both measured on the unedited encoder, in the same units as the changes:

* ``same person``: how far the conditioning of those 30 random identities moves when the input moves
  to another photo of the same person (a vector at cosine 0.9, ``same_person_yardstick``). A
  retained identity that changes less is indistinguishable from a re-photographed one.
* ``floor``: how far they (and the retained) would move under the exact *linear* edit "swap each
  forgotten identity's component for the neutral identity" (``swap_identity`` applied to them).
  A random identity has cosine about ±1/sqrt(D) to a forgotten one (±0.09 in 128-d), so any edit
  that is linear in the identity moves it by about that fraction; only the encoder's
  nonlinearities let a LoRA edit go below this.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from idgen.testing.tiny_arc2face import TINY_TEXT, TINY_UNET, TINY_VAE, letters_tokenizer
from idgen.identity import perturb, random_identities
from idgen.pipelines import Arc2FacePipeline
from idgen.testing.sd15_architecture import random_sd15_components
from idgen.unlearn.generator import GeneratorForgetConfig, forget_identities, same_person_yardstick, swap_identity

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


def linear_swap(ids: torch.Tensor, forget: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """The vectors with every forgotten identity's component swapped for the neutral identity."""
    for identity in forget:
        ids = swap_identity(ids, identity, neutral)
    return ids


def input_space_floor(dim: int, forgotten: int = 2, samples: int = 20_000) -> float:
    """The linear swap's mean change of random identities in identity space, ``||Σ cos(v, f)·(n − f)||
    / ||v − n||``: the floor without the encoder, for any width (512 for ArcFace)."""
    vectors = random_identities(forgotten + 1 + samples, dim, generator=torch.Generator().manual_seed(dim))
    forget, neutral, others = vectors[:forgotten], vectors[forgotten], vectors[forgotten + 1:]
    moved = (others @ forget.T) @ (neutral - forget)
    return float((moved.norm(dim=1) / (others - neutral).norm(dim=1)).mean())


def measure(seed: int, steps: int, learning_rate: float, beta: float) -> dict[str, float]:
    original, pipe = tiny_pipeline(), tiny_pipeline()
    forget, retain = identities(2, 1 + 10 * seed), identities(6, 2 + 10 * seed)
    unseen = identities(30, 99 + seed)
    start = time.perf_counter()
    result = forget_identities(pipe, forget, retain=retain, steps=steps, learning_rate=learning_rate, beta=beta, warmup_steps=steps // 2,
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
    row["retained"] = change(retain).mean()
    row["random"], row["random max"] = change(unseen).mean(), change(unseen).max()
    moves = conditioning(pipe, unseen) - conditioning(original, unseen)
    row["random shared"] = moves.mean(0).norm() / (conditioning(original, unseen) - neutral).norm(dim=1).mean()
    tokens = pipe.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        after, before = pipe.text_encoder(tokens)[0], original.text_encoder(tokens)[0]
    row["empty"] = (after - before).norm() / before.norm()
    row["same person"] = same_person_yardstick(original, unseen, neutral, generator=torch.Generator().manual_seed(7))
    for name, ids in (("retained", retain), ("random", unseen)):
        before = conditioning(original, ids)
        swapped = conditioning(original, linear_swap(ids, forget, result.neutral))
        row[f"floor {name}"] = ((swapped - before).norm(dim=1) / (before - neutral).norm(dim=1)).mean()
    return {name: float(value) for name, value in row.items()} | {"seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--beta", type=float, default=GeneratorForgetConfig.beta, help="weight of the forgetting term")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; the matrices are tiny, so on a shared machine more threads "
                             "mostly wait for each other (15x slower measured on 2 busy cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(seed, args.steps, args.learning_rate, args.beta) for seed in args.seeds]
    names = list(rows[0])
    print(f"{args.steps} steps, learning rate {args.learning_rate}, beta {args.beta}")
    print("| seed | " + " | ".join(names) + " |")
    for seed, row in zip(args.seeds, rows):
        print(f"| {seed} | " + " | ".join(f"{row[n]:.3f}" if n != "seconds" else f"{row[n]:.0f}" for n in names) + " |")
    for dim in (TINY_TEXT["hidden_size"], 512):
        print(f"linear-swap floor in identity space, 2 forgotten, {dim}-d: {input_space_floor(dim):.3f}")


if __name__ == "__main__":
    main()
