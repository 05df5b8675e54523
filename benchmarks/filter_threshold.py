"""Calibrate the consistency filter's threshold for the embedded mini model, as a dataset run filters.

    python benchmarks/filter_threshold.py [--identities 100] [--images 4] [--steps 25] [--far 0.01]

A dataset run (``generator.type: mini``) samples identity vectors, renders images of each and keeps
an image when the filter's recogniser finds a face whose embedding has cosine ≥ τ to the identity's
vector (the filter's ``reference``: the target itself, as MobileFaceNet embeds in the space the model
is conditioned on). This script does the same with the same config, seeds and analyser
(:func:`~idgen.synth.dataset.build_filter`), then scores every render against every identity:

- genuine: a render against the vector it was rendered from;
- impostor: a render against every other identity's vector (what the filter would see if the model
  drew someone else).

It prints both distributions, the AUC of telling them apart, and the thresholds at which ``--far``
(default 1 %) and 0.1 % of impostor scores pass (their 99th / 99.9th percentile), with the share of
genuine renders and of all renders (no face counts as rejected) each would keep; the same for
``--threshold`` values to compare (default: 0.5, the threshold of the other generators).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from idgen.eval.verification import roc_auc
from idgen.synth import SynthConfig
from idgen.synth.dataset import build_filter
from idgen.synth.engine import DatasetEngine
from idgen.synth.generators import build_generator
from idgen.synth.identities import sample_identities
from mini_identity import mini_dataset_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images", type=int, default=4, help="renders per identity")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (the generator's default: 25)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--far", type=float, default=0.01, help="share of impostor scores the threshold lets pass")
    parser.add_argument("--threshold", type=float, nargs="*", default=[0.5], help="other thresholds to report")
    args = parser.parse_args()
    if args.identities < 2 or args.images < 1:
        parser.error("impostor scores need --identities ≥ 2 and --images ≥ 1")

    config = SynthConfig.load(None, [*mini_dataset_settings(args.steps, args.guidance), f"identities.count={args.identities}",
                                     f"variation.images_per_identity={args.images}", f"seed={args.seed}"])
    engine = DatasetEngine(config, build_generator(config.generator, "cpu", config.identities.dim), build_filter(config))
    engine.targets, _ = sample_identities(args.identities, config.identities.dim, config.identities.max_cosine,
                                          seed=config.seed, progress=False)
    slots = [engine.make_slot(identity, n, 0) for identity in range(args.identities) for n in range(args.images)]

    started = time.perf_counter()
    embeddings = []
    for start in range(0, len(slots), args.batch_size):
        embeddings += engine.filter.embed(engine.generate(slots[start:start + args.batch_size]))
    seconds = time.perf_counter() - started

    found = np.array([e is not None for e in embeddings])
    owners = np.array([slot.identity for slot in slots])[found]
    targets = engine.targets.double().numpy()
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    scores = np.stack([e for e in embeddings if e is not None]) @ targets.T
    own = owners[:, None] == np.arange(args.identities)[None, :]
    genuine, impostor = scores[own], scores[~own]

    print(f"{args.identities} identities × {args.images} renders of the mini model, {args.steps} steps, guidance "
          f"{args.guidance}, seed {args.seed}; {len(slots)} renders in {seconds:.0f} s (render + analysis)")
    print(f"face found in {found.sum()} of {len(slots)} renders ({100 * found.mean():.1f} %)")
    for name, values in (("genuine", genuine), ("impostor", impostor)):
        p = np.percentile(values, [1, 50, 99])
        print(f"{name:<8} {len(values):6d} scores: mean {values.mean():.3f}, std {values.std():.3f}, "
              f"1/50/99th percentile {p[0]:.3f} / {p[1]:.3f} / {p[2]:.3f}")
    print(f"AUC genuine vs impostor: {roc_auc(scores.ravel(), own.ravel()):.3f}")
    rules = [(f"{100 * args.far:g} % of impostors pass", float(np.quantile(impostor, 1 - args.far))),
             ("0.1 % of impostors pass", float(np.quantile(impostor, 0.999)))]
    rules += [(f"threshold {value:g}", value) for value in args.threshold]
    print("| rule | threshold | impostors passing | genuine renders kept | all renders kept |\n|---|---|---|---|---|")
    for rule, value in rules:
        print(f"| {rule} | {value:.3f} | {100 * (impostor >= value).mean():.2f} % | "
              f"{100 * (genuine >= value).mean():.1f} % | {100 * (genuine >= value).sum() / len(slots):.1f} % |")


if __name__ == "__main__":
    main()
