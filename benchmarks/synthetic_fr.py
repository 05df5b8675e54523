"""Synthetic faces → a face recogniser → LFW: the synthetic-data papers' headline experiment, in miniature.

    python benchmarks/synthetic_fr.py --lfw PATH/TO/lfw [--identities 200] [--images 8] [--epochs 20]

Every arm trains the same recogniser (MobileFaceNet with a CosFace head, s 16, m 0.2: the margin
that trains in a few hundred steps on small sets, see "Training a recogniser" in the docs' results)
on the same number of images, and is tested on LFW View 1 DevTest (``pairsDevTest.txt``,
1,000 pairs of people the embedded model never saw) with ``idgen eval verify --flip``'s protocol:

- ``synthetic, hypersphere``: ``idgen dataset generate`` with ``generator.type: mini``:
  ``--identities`` identity vectors packed on the sphere (pairwise cosine ≤ 0.3), ``--images``
  kept renders each (identity perturbed per image, consistency filter on);
- ``synthetic, Gaussian prior``: the same, the identities drawn from a Gaussian fitted to the
  embedded model's training identities (one mean embedding per LFW person outside DevTest), then
  packed the same way;
- ``real``: LFW photos of people outside DevTest (the people the embedded model learned from, with
  the most photos first), as many images as the hypersphere arm kept;
- ``real + synthetic``: both folders together;
- ``untrained``: the same network, randomly initialised (the floor).

All training images are 64×64 crops aligned as the embedded model draws them (the ArcFace
template shrunk by 0.8; real photos are cropped that way from their dlib landmarks), so the arms
differ only in where the faces came from; the recogniser sees 64-px inputs. Each step's output is
kept in ``--output-dir`` and reused when the command is run again (datasets resume; finished models are
not retrained). Prints the table and writes ``results.json`` and ``samples.png`` (four identities of
each training set, one row each: hypersphere, Gaussian prior, real).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from idgen.eval.verification import read_pairs, verify_pairs
from idgen.faces import FaceAnalyzer
from idgen.io import atomic_path, write_json_atomic
from idgen.models.backbones import build_backbone, save_recognizer
from idgen.pipelines.mini import MINI_IDENTITY_DIM, MINI_RESOLUTION
from idgen.recognition.trainer import MobileFaceNetRecipe, train
from idgen.synth import generate_dataset
from idgen.training.data import load_training_image, read_people
from idgen.training.validation import save_grid
from mini_identity import indices_by_person, mini_lfw_faces

ROOT = Path(__file__).resolve().parents[1]
#: Where the embedded model puts the ArcFace template in its 64×64 crops (``face_scale`` of its data).
FACE_SCALE = 0.8


def training_photos(lfw: Path):
    """The embedded model's training photos (LFW minus the DevTest people) with their flip-summed
    MobileFaceNet vectors and landmarks."""
    return mini_lfw_faces(lfw, exclude=read_people([lfw / "peopleDevTest.txt", lfw / "pairsDevTest.txt"]))


def write_prior(photos, path: Path) -> int:
    """One unit vector per person (the mean of their photos' vectors): what a Gaussian prior over
    *identities* should be fitted to. Returns the number of people."""
    people = indices_by_person(photos.files)
    vectors = torch.nn.functional.normalize(photos.id_embeds, dim=1)
    means = torch.stack([vectors[people[name]].mean(0) for name in sorted(people)])
    with atomic_path(path) as tmp:
        save_file({"normed": torch.nn.functional.normalize(means, dim=1).contiguous()}, tmp)
    return len(people)


def synthesize(out: Path, args, prior: Path | None) -> dict:
    """One synthetic arm with the dataset engine (resumes an interrupted run)."""
    config = {
        "output": str(out), "seed": args.seed,
        "generator": {"type": "mini", "num_inference_steps": args.steps, "guidance_scale": args.guidance},
        "identities": {"count": args.identities, "dim": MINI_IDENTITY_DIM, "max_cosine": 0.3,
                       "prior": str(prior) if prior else None},
        "variation": {"images_per_identity": args.images, "min_cosine": args.min_cosine},
        "filter": {"detector": "dlib", "recognizer": "mobilefacenet", "threshold": args.threshold,
                   "reference": "target", "max_retries": args.retries},
        "writers": {"formats": ["imagefolder"]},
        "runtime": {"batch_size": 32, "device": "cpu"},
    }
    return generate_dataset(config)  # its filter sees the renders as the model's own analyser does (build_filter)


def write_real(photos, out: Path, total: int, min_photos: int, per_person: int) -> dict:
    """``total`` real training photos as the embedded model's 64×64 aligned crops, ``out/<name>/``:
    people with at least ``min_photos`` photos, most photos first, at most ``per_person`` each."""
    ranked = sorted((p for p in indices_by_person(photos.files).items() if len(p[1]) >= min_photos), key=lambda p: (-len(p[1]), p[0]))
    chosen, count = [], 0
    for name, indices in ranked:
        take = indices[:min(per_person, total - count)]
        chosen += [(name, i) for i in take]
        count += len(take)
        if count == total:
            break
    for name, index in chosen:
        target = out / name / Path(photos.files[index]).with_suffix(".png").name
        if not target.exists():
            crop = load_training_image(photos.files[index], MINI_RESOLUTION, photos.landmarks[index].numpy(), FACE_SCALE)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                Image.fromarray(((crop.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(tmp, "PNG")
    return {"images": len(chosen), "identities": len({name for name, _ in chosen})}


def link_union(sources: dict[str, Path], out: Path) -> None:
    """An ImageFolder of symbolic links: every identity folder of each source, its name prefixed."""
    for prefix, source in sources.items():
        for identity in sorted(p for p in source.iterdir() if p.is_dir()):
            link = out / f"{prefix}-{identity.name}"
            if not link.exists():
                out.mkdir(parents=True, exist_ok=True)
                os.symlink(identity.resolve(), link)


def sample_grid(folders: list[Path], path: Path, identities: int = 4, images: int = 8) -> None:
    """A picture of the training data: per folder, ``identities`` rows (its first identities with
    ``images`` pictures) of ``images`` pictures each, as 64×64 tiles."""
    rows = []
    for folder in folders:
        people = [p for p in sorted(folder.iterdir()) if p.is_dir() and len(list(p.iterdir())) >= images]
        for person in people[:identities]:
            tiles = [Image.open(f).convert("RGB").resize((MINI_RESOLUTION,) * 2) for f in sorted(person.iterdir())[:images]]
            rows.append(np.concatenate([np.asarray(t) for t in tiles], axis=1))
    save_grid(np.concatenate(rows), path)


def recognizer_config(data: Path, output: Path, args) -> MobileFaceNetRecipe:
    """``idgen recognizer train --architecture mobilefacenet --align box --fallback-box 0.8 --resolution 64
    --head cosface --scale 16 --margin 0.2``: the crops are already aligned, with the template shrunk by 0.8."""
    return MobileFaceNetRecipe(data=str(data), output_dir=str(output), epochs=args.epochs, batch_size=64, align="box",
                               fallback_box=FACE_SCALE, resolution=MINI_RESOLUTION, head="cosface", scale=16.0,
                               margin=0.2, cache_dir=str(args.output_dir / "aligned"), seed=args.seed)


def train_once(data: Path, output: Path, args) -> dict:
    """Train unless ``output`` already holds a finished model; the run's summary."""
    if not (output / "config.json").is_file():
        started = time.perf_counter()
        summary = train(recognizer_config(data, output, args))
        summary["wall_seconds"] = time.perf_counter() - started
        return summary
    return json.loads((output / "config.json").read_text())["summary"]


def save_untrained(output: Path, args) -> None:
    config = recognizer_config(args.output_dir, output, args)
    torch.manual_seed(args.seed)
    network = build_backbone(config.architecture, config.network_arguments())
    save_recognizer(output, config.architecture, network, network.config, train={}, summary={})


def verify(recognizer: str, lfw: Path) -> dict:
    """``idgen eval verify --pairs pairsDevTest.txt --images images --recognizer RECOGNIZER --flip
    --fallback-box 0.42``."""
    analyzer = FaceAnalyzer.from_backend("dlib", recognizer, fallback_box=0.42, flip=True)
    return verify_pairs(analyzer, read_pairs(lfw / "pairsDevTest.txt", lfw / "images"), progress=False).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "data" / "lfw",
                        help="LFW folder (images/, pairsDevTest.txt, peopleDevTest.txt)")
    parser.add_argument("--identities", type=int, default=200, help="synthetic identities per arm")
    parser.add_argument("--images", type=int, default=8, help="kept renders per synthetic identity")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per render")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--min-cosine", type=float, default=0.9,
                        help="each render's identity vector is perturbed to a cosine ≥ this to its identity")
    parser.add_argument("--threshold", type=float, default=0.1,
                        help="consistency filter: keep a render whose MobileFaceNet cosine to its identity ≥ this "
                             "(0.1: about the median of the embedded model's renders of their own identity)")
    parser.add_argument("--retries", type=int, default=3, help="regenerations of a rejected render")
    parser.add_argument("--epochs", type=int, default=20, help="recogniser epochs (every arm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/synthetic-fr"))
    args = parser.parse_args()
    out, lfw = args.output_dir, args.lfw
    out.mkdir(parents=True, exist_ok=True)

    photos = training_photos(lfw)
    prior_people = write_prior(photos, out / "prior.safetensors")
    datasets = {"synthetic, hypersphere": synthesize(out / "synthetic-hypersphere", args, None),
                "synthetic, Gaussian prior": synthesize(out / "synthetic-prior", args, out / "prior.safetensors")}
    kept = datasets["synthetic, hypersphere"]["images"]
    real = write_real(photos, out / "real", kept, min_photos=4, per_person=args.images)
    link_union({"synthetic": out / "synthetic-hypersphere" / "images", "real": out / "real"}, out / "mixed")
    sample_grid([out / "synthetic-hypersphere" / "images", out / "synthetic-prior" / "images", out / "real"],
                out / "samples.png")

    folders = {"synthetic, hypersphere": out / "synthetic-hypersphere", "synthetic, Gaussian prior": out / "synthetic-prior",
               "real": out / "real", "real + synthetic": out / "mixed"}
    rows = {}
    for arm, data in folders.items():
        model = out / "models" / arm.replace(", ", "-").replace(" + ", "+").replace(" ", "-")
        rows[arm] = {"training": train_once(data, model, args), "lfw_devtest": verify(str(model), lfw)}
    untrained = out / "models" / "untrained"
    if not (untrained / "config.json").is_file():
        save_untrained(untrained, args)
    rows["untrained"] = {"training": {}, "lfw_devtest": verify(str(untrained), lfw)}
    rows["reference: the shipped MobileFaceNet (112 px, trained on a large real set)"] = {
        "training": {}, "lfw_devtest": verify("mobilefacenet", lfw)}

    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "prior_people": prior_people, "datasets": datasets, "real": real, "arms": rows}
    write_json_atomic(out / "results.json", results)
    print(f"LFW View 1 DevTest (1,000 pairs); MobileFaceNet (CosFace) at 64 px, {args.epochs} epochs; "
          f"{args.identities} synthetic identities × {args.images} images per arm")
    print("| training data | identities | images | accuracy | AUC | TAR@FAR=1e-3 |\n|---|---|---|---|---|---|")
    for arm, row in rows.items():
        t, v = row["training"], row["lfw_devtest"]
        print(f"| {arm} | {t.get('identities', '–')} | {t.get('images', '–')} | {100 * v['accuracy']:.1f} ± "
              f"{100 * v['accuracy_std']:.1f} % | {v['auc']:.3f} | {100 * v['tar_at_far_1e3']:.1f} % |")
    for arm, stats in datasets.items():
        print(f"{arm}: acceptance {100 * stats['acceptance_rate']:.1f} % ({stats['counts']})")
    print(f"wrote {out / 'results.json'} and {out / 'samples.png'}; dataset cards in {out}/synthetic-*/")


if __name__ == "__main__":
    main()
