"""The embedded mini model on held-out LFW people: identity, face detection, diversity, a sample grid.

    python benchmarks/mini_identity.py --lfw PATH/TO/lfw [--people 100] [--renders 8] [--model FOLDER]

The people are the first ``--people`` (after ``--skip``) of LFW View 1 DevTest (``peopleDevTest.txt``; the mini model
never saw them) with at least two photos. Photo 1 of each conditions the model; photo 2 is the
gallery. Each person gets ``--renders`` renders, each from its own seed, and every render is scored
against all the gallery photos twice: by dlib's recogniser (independent of the model, which was
conditioned on MobileFaceNet) and by MobileFaceNet. Printed and written to ``results.json``:

- genuine / impostor mean cosine (render vs own gallery photo / vs the other people's), the AUC of
  telling them apart, and rank-1 identification among the gallery (chance: 1 / people);
- the same for photo 1 itself in place of the renders: what a perfect generator would reach;
- face detection rate on the renders (dlib, on a 3× upscaled copy; undetected renders are scored
  on a centred box);
- diversity: mean pairwise dlib similarity of the renders of one person (lower is more varied);
- ``samples.png``: one row per person, photo 1 aligned as in training, then its renders.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from idgen.eval.verification import roc_auc
from idgen.faces import FaceAnalyzer
from idgen.faces.analyzer import FALLBACK_SCORE
from idgen.io import write_json_atomic
from idgen.pipelines import Arc2FacePipeline
from idgen.pipelines.mini import MINI_FACE_BACKENDS, MINI_IDENTITY_DIM, load_mini_pipeline, mini_face_analyzer
from idgen.training.data import IdentityCache, default_cache_path, load_training_image, scan_faces
from idgen.training.validation import save_grid

ROOT = Path(__file__).resolve().parents[1]


def mini_lfw_faces(lfw: Path, **people):
    """The photos under ``lfw/images`` with the vectors the mini model is conditioned on (and their
    landmarks), read from the identity cache its training filled, so photos analysed once are not
    analysed again; ``people`` are :func:`~idgen.training.scan_faces`' ``exclude`` / ``only``."""
    cache = IdentityCache(default_cache_path(*(MINI_FACE_BACKENDS[k] for k in ("detector", "recognizer", "flip"))))
    return scan_faces(lfw / "images", mini_face_analyzer(), cache, what="--lfw", **people)


def indices_by_person(files: list[str]) -> dict[str, list[int]]:
    """Positions of each person's photos in ``files`` (``<root>/<person>/<photo>``), in file order."""
    people: dict[str, list[int]] = {}
    for index, path in enumerate(files):
        people.setdefault(Path(path).parent.name, []).append(index)
    return people


def held_out_people(lfw: Path, count: int, skip: int = 0) -> list[tuple[str, Path, Path]]:
    """(name, photo 1, photo 2) of ``count`` DevTest people with two photos or more, after the first ``skip``."""
    rows = [line.split() for line in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]]
    people = [name for name, photos in rows if int(photos) >= 2][skip:skip + count]
    return [(name, lfw / "images" / name / f"{name}_0001.jpg", lfw / "images" / name / f"{name}_0002.jpg")
            for name in people]


def normed(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def identification(probes: np.ndarray, owners: np.ndarray, gallery: np.ndarray) -> dict:
    """Cosine scores of every probe against every gallery vector: genuine/impostor means, AUC, rank-1."""
    scores = normed(probes) @ normed(gallery).T
    same = owners[:, None] == np.arange(len(gallery))[None, :]
    return {"genuine": float(scores[same].mean()), "impostor": float(scores[~same].mean()),
            "auc": roc_auc(scores.ravel(), same.ravel()),
            "rank1": float((scores.argmax(axis=1) == owners).mean())}


def render_seeded(pipe, id_embeds: torch.Tensor, seeds, renders: int, steps: int, guidance: float) -> np.ndarray:
    """One pipeline call: ``N·K×64×64×3`` uint8, person-major, render ``i`` from ``seeds[i]``."""
    images = pipe(id_embeds=id_embeds, num_images_per_prompt=renders, num_inference_steps=steps,
                  guidance_scale=guidance, generator=[torch.Generator().manual_seed(s) for s in seeds],
                  output_type="np").images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def render(pipe, id_embeds: torch.Tensor, renders: int, batch_people: int, steps: int, guidance: float) -> np.ndarray:
    """``N·K×64×64×3`` uint8, person-major, ``batch_people`` people per call; render ``i`` comes from seed ``i``."""
    out = []
    for start in tqdm(range(0, len(id_embeds), batch_people), desc="rendering", unit="batch"):
        batch = id_embeds[start:start + batch_people]
        out.append(render_seeded(pipe, batch, range(start * renders, (start + len(batch)) * renders), renders,
                                 steps, guidance))
    return np.concatenate(out)


def mini_dataset_settings(steps: int, guidance: float) -> list[str]:
    """The config overrides of a ``generator.type: mini`` dataset: the model, its identity size and the
    recogniser it is conditioned on (the filter refuses any other)."""
    return ["generator.type=mini", f"generator.num_inference_steps={steps}", f"generator.guidance_scale={guidance}",
            f"identities.dim={MINI_IDENTITY_DIM}", f"filter.recognizer={MINI_FACE_BACKENDS['recognizer']}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW folder (images/, peopleDevTest.txt)")
    parser.add_argument("--model", default=None, help="an Arc2Face pipeline folder (default: the embedded mini model)")
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--skip", type=int, default=0,
                        help="start after this many eligible people (tune settings on people the report does not use)")
    parser.add_argument("--renders", type=int, default=8, help="renders per person")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch-people", type=int, default=8, help="people per pipeline call")
    parser.add_argument("--grid-people", type=int, default=8, help="rows of samples.png")
    parser.add_argument("--output-dir", default="runs/mini-benchmark")
    args = parser.parse_args()

    lfw, out = Path(args.lfw), Path(args.output_dir)
    people = held_out_people(lfw, args.people, args.skip)
    conditioning = mini_face_analyzer()
    # renders are 64² crops: detected on an upscaled copy, and undetected ones scored on a centred box
    scorers = {"dlib": FaceAnalyzer.from_backend("dlib", "dlib", min_side=MINI_FACE_BACKENDS["min_side"], fallback_box=0.7),
               "mobilefacenet": mini_face_analyzer(fallback_box=0.7)}

    started = time.time()
    photo1 = conditioning.analyze_many([str(p) for _, p, _ in people], on_missing="raise", progress=False)
    id_embeds = torch.from_numpy(np.stack([face.embedding for face in photo1]).astype(np.float32))
    if args.model:
        pipe = Arc2FacePipeline.from_pretrained(args.model, dtype=torch.float32)
    else:
        pipe = load_mini_pipeline("cpu" if not torch.cuda.is_available() else None)
    pipe.set_progress_bar_config(disable=True)
    images = render(pipe, id_embeds.to(pipe.device, pipe.unet.dtype), args.renders, args.batch_people,
                    args.steps, args.guidance)
    render_s = time.time() - started

    owners = np.repeat(np.arange(len(people)), args.renders)
    results = {"people": len(people), "skipped": args.skip, "renders_per_person": args.renders, "steps": args.steps,
               "guidance": args.guidance, "model": args.model or "embedded mini model", "chance_rank1": 1 / len(people)}
    for name, scorer in scorers.items():
        gallery = scorer.analyze_many([str(p) for _, _, p in people], on_missing="raise", progress=False)
        real = scorer.analyze_many([str(p) for _, p, _ in people], on_missing="raise", progress=False)
        faces = scorer.analyze_many(list(images), on_missing="raise", progress=False)
        gallery_vectors = np.stack([f.embedding for f in gallery])
        render_vectors = normed([f.embedding for f in faces])
        results[name] = {
            "renders": identification(render_vectors, owners, gallery_vectors),
            "real_photo_1": identification(np.stack([f.embedding for f in real]), np.arange(len(people)), gallery_vectors),
        }
        if name == "dlib":
            results["detection_rate"] = float(np.mean([f.det_score != FALLBACK_SCORE for f in faces]))
            per_person = render_vectors.reshape(len(people), args.renders, -1)
            pairs = list(itertools.combinations(range(args.renders), 2))
            results["diversity_pairwise_similarity"] = float(np.mean(
                [(per_person[:, i] * per_person[:, j]).sum(-1).mean() for i, j in pairs]))
    results["render_seconds"] = render_s

    rows = []
    for index, (_, photo, _) in enumerate(people[:args.grid_people]):
        crop = load_training_image(str(photo), images.shape[1], photo1[index].landmarks, face_scale=0.8)
        real = ((crop.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        rows.append(np.concatenate([real, *images[index * args.renders:(index + 1) * args.renders]], axis=1))
    out.mkdir(parents=True, exist_ok=True)
    save_grid(np.concatenate(rows), out / "samples.png")
    write_json_atomic(out / "results.json", results)

    print(f"{len(people)} held-out LFW people × {args.renders} renders, {args.steps} steps, guidance {args.guidance}")
    print("| scored by | probes | genuine | impostor | AUC | rank-1 |\n|---|---|---|---|---|---|")
    for name in scorers:
        for probe, label in (("renders", "renders"), ("real_photo_1", "real photo 1 (ceiling)")):
            r = results[name][probe]
            print(f"| {name} | {label} | {r['genuine']:.3f} | {r['impostor']:.3f} | {r['auc']:.3f} | {100 * r['rank1']:.1f} % |")
    print(f"face detection rate (dlib): {100 * results['detection_rate']:.1f} %; "
          f"diversity (mean pairwise dlib similarity of one person's renders): {results['diversity_pairwise_similarity']:.3f}; "
          f"chance rank-1 {100 / len(people):.1f} %")
    print(f"wrote {out / 'results.json'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
