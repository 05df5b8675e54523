"""Editing with the embedded mini model on held-out LFW people: identity replaced and identity kept.

    python benchmarks/edit_identity.py --lfw PATH/TO/lfw [--people 20] [--seed 0] [--model FOLDER]

The people are the first ``--people`` of LFW View 1 DevTest (``peopleDevTest.txt``; the mini model
never saw them) with at least two photos. Person ``i`` is A, person ``i + 1`` (wrapping round) is B:

- **replace**: :func:`idgen.edit.replace_identity` puts B (conditioned on B's photo 1) into A's
  photo 1 (its largest face);
- **restyle**: :func:`idgen.edit.restyle` re-renders A's photo 1 as A (Arc2Face takes no prompt:
  ``prompt=None``, ``--restyle-strength`` 0.5).

Every edited photo is scored, at the place of A's face, by dlib's recogniser (independent of the
model, which is conditioned on MobileFaceNet) and by MobileFaceNet, against photo 2 of B (the
target: a different photo than the one that conditioned the edit), photo 2 of A (the person who was
there) and photo 2 of everyone else (the impostor baseline). The unedited photo 1 of A and the
conditioning photo 1 of B are scored the same way, as the before and the ceiling. Printed and written
to ``results.json``: the mean cosines, the share of replacements closer to B than to A, the largest
absolute pixel difference outside the edit mask (the library promises 0), the face detection
rate on the edited photos (dlib; an undetected face is scored on the crop at A's landmarks), and the
similarities the edit functions report themselves (MobileFaceNet, against the photo 1s).
``samples.png``: one row per pair, A's photo 1 | B's photo 1 | replaced | restyled, cropped around A's face.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from idgen.edit import embedding_at, replace_identity, restyle
from idgen.edit.region import crop_box, resize
from idgen.faces import FaceAnalyzer, load_image
from idgen.faces.analyzer import FALLBACK_SCORE
from idgen.io import write_json_atomic
from idgen.pipelines import Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline, Arc2FacePipeline
from idgen.pipelines.mini import load_mini_pipeline, mini_face_analyzer
from idgen.training.validation import save_grid
from mini_identity import held_out_people, normed

ROOT = Path(__file__).resolve().parents[1]
#: Probes of the replacement table: (key in results.json, label).
REPLACE_PROBES = (("replaced", "replaced photo of A"), ("photo_a", "photo 1 of A, unedited (before)"),
                  ("photo_b", "photo 1 of B, the conditioning photo (ceiling)"))


def embed_at(scorer: FaceAnalyzer, rgb: np.ndarray, where) -> tuple[np.ndarray, bool]:
    """``scorer``'s embedding of the face at ``where``'s place in ``rgb`` and whether a detected face
    (not a fallback box) was there; otherwise the crop at ``where``'s landmarks is embedded."""
    detected = [face for face in scorer.analyze(rgb) if face.det_score != FALLBACK_SCORE]
    return embedding_at(scorer, rgb, detected, where)


def similarities(probes: np.ndarray, gallery: np.ndarray, targets: np.ndarray, originals: np.ndarray) -> dict:
    """Cosine of probe ``k`` to gallery photo ``targets[k]`` (B), ``originals[k]`` (A) and the rest."""
    scores = normed(probes) @ normed(gallery).T
    rows = np.arange(len(probes))
    to_b, to_a = scores[rows, targets], scores[rows, originals]
    others = np.ones_like(scores, dtype=bool)
    others[rows, targets] = others[rows, originals] = False
    return {"to_target_b": float(to_b.mean()), "to_original_a": float(to_a.mean()),
            "to_unrelated": float(scores[others].mean()), "closer_to_b_than_a": float((to_b > to_a).mean())}


def face_crop(rgb: np.ndarray, face, side: int) -> np.ndarray:
    x0, y0, size = crop_box(face, rgb.shape, context=1.6)
    return resize(rgb[y0:y0 + size, x0:x0 + size], (side, side))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW folder (images/, peopleDevTest.txt)")
    parser.add_argument("--model", default=None, help="an Arc2Face pipeline folder (default: the embedded mini model)")
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="edit k uses seed SEED + k")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's, 25)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's, 3.0)")
    parser.add_argument("--restyle-strength", type=float, default=0.5)
    parser.add_argument("--grid-people", type=int, default=8, help="rows of samples.png")
    parser.add_argument("--output-dir", default="runs/edit-benchmark")
    args = parser.parse_args()

    lfw, out = Path(args.lfw), Path(args.output_dir)
    people = held_out_people(lfw, args.people)
    if len(people) < 3:
        raise SystemExit(f"--people {args.people}: need at least 3 (A, B and someone unrelated)")
    conditioning = mini_face_analyzer()
    scorers = {"dlib": FaceAnalyzer.from_backend("dlib", "dlib", fallback_box=0.42),
               "mobilefacenet": mini_face_analyzer(fallback_box=0.42)}
    if args.model:
        pipe = Arc2FacePipeline.from_pretrained(args.model, dtype=torch.float32).to("cuda" if torch.cuda.is_available() else "cpu")
        pipe.set_face_analyzer(conditioning)
    else:
        pipe = load_mini_pipeline()
    pipe.set_progress_bar_config(disable=True)
    # the edits' own pipelines, made once (the edit functions would make them with from_pipe on every call)
    inpaint, img2img = Arc2FaceInpaintPipeline.from_pipe(pipe), Arc2FaceImg2ImgPipeline.from_pipe(pipe)
    for variant in (inpaint, img2img):
        variant.set_face_analyzer(conditioning)
        variant.set_progress_bar_config(disable=True)
    sampling = {"num_inference_steps": args.steps, "guidance_scale": args.guidance}

    photos1 = [load_image(str(p)) for _, p, _ in people]
    faces = [conditioning.get_face(rgb, name=str(p)) for rgb, (_, p, _) in zip(photos1, people)]   # largest face
    pairs = [(k, (k + 1) % len(people)) for k in range(len(people))]
    replaced, restyled, reported, outside = [], [], [], []
    started = time.time()
    for k, (a, b) in enumerate(tqdm(pairs, desc="editing", unit="pair")):
        result = replace_identity(photos1[a], photos1[b], pipe=inpaint, face=0,
                                  generator=torch.Generator().manual_seed(args.seed + k), **sampling)
        image = np.asarray(result.image)
        outside.append(int(np.abs(image.astype(int) - photos1[a].astype(int))[result.mask == 0].max(initial=0)))
        replaced.append(image)
        kept = restyle(photos1[a], pipe=img2img, face=0, strength=args.restyle_strength,
                       generator=torch.Generator().manual_seed(args.seed + k), **sampling)
        restyled.append(np.asarray(kept.image))
        reported.append({"person_a": people[a][0], "person_b": people[b][0],
                         "replace_similarity_to_target": result.similarity_to_target[0],
                         "replace_similarity_to_original": result.similarity_to_original[0],
                         "restyle_similarity_to_person": kept.similarity_to_target[0]})
    edit_s = time.time() - started

    targets = np.array([b for _, b in pairs])
    originals = np.array([a for a, _ in pairs])
    results = {"people": len(people), "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
               "restyle_strength": args.restyle_strength, "model": args.model or "embedded mini model",
               "max_abs_pixel_difference_outside_mask": max(outside), "edit_seconds": edit_s,
               # what the edit functions report themselves: the conditioning analyser, against B's and A's photo 1
               "reported_by_the_edits": {key: float(np.mean([pair[key] for pair in reported])) for key in reported[0]
                                         if key.endswith(("target", "original", "person"))},
               "pairs": reported}
    for name, scorer in scorers.items():
        gallery = np.stack([scorer.get_face(str(p)).embedding for _, _, p in people])
        at_a = [embed_at(scorer, image, faces[a]) for image, a in zip(replaced, originals)]
        kept_at_a = [embed_at(scorer, image, faces[a]) for image, a in zip(restyled, originals)]
        probes = {"replaced": np.stack([e for e, _ in at_a]),
                  "photo_a": np.stack([scorer.get_face(photos1[a]).embedding for a in originals]),
                  "photo_b": np.stack([scorer.get_face(photos1[b]).embedding for b in targets])}
        results[name] = {key: similarities(vectors, gallery, targets, originals) for key, vectors in probes.items()}
        restyle_scores = similarities(np.stack([e for e, _ in kept_at_a]), gallery, originals, targets)
        results[name]["restyled"] = {"to_person_a": restyle_scores["to_target_b"],
                                     "to_unrelated": restyle_scores["to_unrelated"]}
        if name == "dlib":
            results["detection_rate_replaced"] = float(np.mean([found for _, found in at_a]))
            results["detection_rate_restyled"] = float(np.mean([found for _, found in kept_at_a]))

    side = 96
    rows = [np.concatenate([face_crop(photos1[a], faces[a], side), face_crop(photos1[b], faces[b], side),
                            face_crop(replaced[k], faces[a], side), face_crop(restyled[k], faces[a], side)], axis=1)
            for k, (a, b) in enumerate(pairs[:args.grid_people])]
    out.mkdir(parents=True, exist_ok=True)
    save_grid(np.concatenate(rows), out / "samples.png")
    write_json_atomic(out / "results.json", results)

    print(f"{len(people)} held-out LFW people; replace: B into A's photo (strength 1.0); "
          f"restyle: A's photo re-rendered as A (strength {args.restyle_strength}); seed {args.seed}")
    print("| scored by | probe | to target B (photo 2) | to original A (photo 2) | to unrelated people "
          "| closer to B than to A |\n|---|---|---|---|---|---|")
    for name in scorers:
        for key, label in REPLACE_PROBES:
            r = results[name][key]
            print(f"| {name} | {label} | {r['to_target_b']:.3f} | {r['to_original_a']:.3f} | {r['to_unrelated']:.3f} "
                  f"| {100 * r['closer_to_b_than_a']:.0f} % |")
    print("\n| scored by | to A (photo 2) before: photo 1 | after: restyled photo 1 | restyled to unrelated people |"
          "\n|---|---|---|---|")
    for name in scorers:
        print(f"| {name} | {results[name]['photo_a']['to_original_a']:.3f} | {results[name]['restyled']['to_person_a']:.3f} "
              f"| {results[name]['restyled']['to_unrelated']:.3f} |")
    print(f"max |pixel difference| outside the mask: {results['max_abs_pixel_difference_outside_mask']}; "
          f"face detected at A's place (dlib): replaced {100 * results['detection_rate_replaced']:.0f} %, "
          f"restyled {100 * results['detection_rate_restyled']:.0f} %; editing took {edit_s:.0f} s")
    own = results["reported_by_the_edits"]
    print(f"as the edits report it (MobileFaceNet, against photo 1): replaced to B {own['replace_similarity_to_target']:.3f}, "
          f"to A {own['replace_similarity_to_original']:.3f}; restyled to A {own['restyle_similarity_to_person']:.3f}")
    print(f"wrote {out / 'results.json'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
