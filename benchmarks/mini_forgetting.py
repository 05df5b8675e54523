"""Forgetting people the embedded mini model was trained on, measured on its renders, beside the guard.

    python benchmarks/mini_forgetting.py --lfw PATH/TO/lfw [--forget 5] [--retained 50] [--held-out 20]
                                         [--renders 2] [--steps 10] [--forget-steps 100] [--radius 0.5]
                                         [--neutral chosen|mean] [--candidates 16] [--population 500]

People: the mini model was trained on LFW minus the View 1 DevTest people. Two requests of
``--forget`` trained people (at least six usable photos each) are forgotten one after the other with
:func:`~idgen.unlearn.generator.forget_identities` (GS-LoRA on the text encoder), each request given
the MobileFaceNet vectors of photos 1–3 of its people, the ``--retained`` other trained people (photo
1) and, for the second request, the people of the first (so they stay forgotten). The neutral identity
they turn into is picked by :func:`choose_neutral`: of ``--candidates`` random identities, the one
whose renders the model's own face analysis (MobileFaceNet) finds least like ``--population`` other
trained people (one photo each, none of the people measured below; never dlib, never the galleries).
``--neutral mean`` uses the mean vector of every trained photo instead ("nobody in particular").

Renders come from photos the requests never saw: photos 4–6 of the forgotten people, photo 2 of the
retained and of ``--held-out`` DevTest people; ``--renders`` seeds each, the same seeds before and
after, so every change is paired. dlib's recogniser (not the MobileFaceNet the model is conditioned
on) scores each render against its person's gallery, up to ``--gallery`` of their other photos:
``genuine``. Two impostor levels: the same renders against every other person's gallery (the
``impostor level`` row), and, per forgotten group, the renders of everybody else (retained and
held-out) against that group's galleries (``others against forgotten N``: some galleries resemble
every render more than others do). Measured before the first request, after it, and after the
second (continual).

Targets: the forgotten people's genuine similarity falls to the impostor level (here: no
more than two standard errors above both levels), the retained people's drops by 0.03 at most.

The protected-identity guard (``idgen.guard``), given the same photos 1–3 as its protected list and
the threshold that best separates LFW's DevTest pairs for the same MobileFaceNet (``best_threshold``;
or ``--guard-threshold``), checks requests instead of changing weights. Measured: how many of the
forgotten people's other photos it refuses, how many photos of everyone else it refuses wrongly,
how like the person the renders of the photos it lets through are, and an evading request: each
render vector moved away from its person's protected vectors just far enough to pass the guard,
rendered with the original weights (what the guard lets out) and with the forgetting weights.

Forgetting turns a person into the neutral identity, which may itself resemble some people more than
the average impostor does. The rows "neutral identity as forgotten 1 / 2" show that floor: the
neutral identity rendered with the forgotten renders' seeds on the original weights, scored against
the same people's galleries.

Writes ``results.json`` to ``--output-dir`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from idgen.eval.verification import best_threshold, read_pairs
from idgen.faces import FaceAnalyzer
from idgen.guard import IdentityGuard
from idgen.identity import normalize, random_identities
from idgen.io import write_json_atomic
from idgen.pipelines.mini import MINI_FACE_BACKENDS, load_mini_pipeline
from idgen.training import read_people
from idgen.unlearn.generator import forget_identities
from idgen.synth.identities import similarity_stats
from mini_identity import indices_by_person, mini_lfw_faces, normed, render, render_seeded

ROOT = Path(__file__).resolve().parents[1]
STATES = ("before", "after request 1", "after request 2")
#: Row-name prefix of the neutral identity's renders scored as a forgotten group (the floor of forgetting).
NEUTRAL = "neutral identity as"


@dataclass
class Person:
    name: str
    files: list[str]          # usable photos in LFW order
    vectors: torch.Tensor     # their MobileFaceNet (flip-summed) vectors, what the model is conditioned on


@dataclass
class RenderSet:
    """Render vectors of several people, and whose each is (``owners`` indexes ``people``)."""

    people: list[Person]
    vectors: torch.Tensor
    owners: np.ndarray
    render_files: set[str]    # left out of the galleries


def people_by_name(faces) -> dict[str, Person]:
    return {name: Person(name, [faces.files[i] for i in rows], faces.id_embeds[rows])
            for name, rows in indices_by_person(faces.files).items()}


def render_set(people: list[Person], photos: slice) -> RenderSet:
    vectors, owners, files = [], [], set()
    for index, person in enumerate(people):
        vectors.append(person.vectors[photos])
        owners += [index] * len(person.vectors[photos])
        files.update(person.files[photos])
    return RenderSet(people, torch.cat(vectors), np.array(owners), files)


def evading(vectors: torch.Tensor, protected: torch.Tensor, guard: IdentityGuard, step: float = 0.02) -> torch.Tensor:
    """Each vector pushed away from ``protected`` (its own person's protected vectors, one row per
    vector) just far enough that ``guard`` lets it through: ``normalize(v − t·p)`` for the smallest
    ``t`` on a grid of ``step``. What a requester who knows the guard would send."""
    out = []
    for vector, away in zip(normalize(vectors), normalize(protected)):
        t = 0.0
        while guard.matches(normalize(vector - t * away)[None]):
            t += step
        out.append(normalize(vector - t * away))
    return torch.stack(out)


@torch.no_grad()
def choose_neutral(pipe, population: torch.Tensor, *, candidates: int, steps: int, guidance: float, renders: int = 4,
                   seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The one of ``candidates`` random identities whose renders look least like anybody in
    ``population`` (identity vectors of real people), and every candidate's resemblance (nan where
    no render had a face).

    Each candidate is rendered ``renders`` times and embedded with ``pipe.face_analyzer``; its resemblance is the mean cosine of its renders to the population.
    Forgetting turns people into the neutral identity, so how much its renders resemble them is what
    would stay of them if forgetting were perfect; a face like nobody in particular resembles them
    no more than anybody else. (Scoring candidates against the request's own few photos instead,
    tried first, was too noisy to help: see the docs' Results.)
    """
    population = normalize(population.float())
    generator = torch.Generator().manual_seed(seed)
    pool = random_identities(candidates, population.shape[-1], generator=generator)
    render_seeds = torch.randint(0, 2**31 - 1, (candidates, renders), generator=generator).tolist()
    resemblance = []
    for candidate, seeds in zip(pool, render_seeds):
        pixels = render_seeded(pipe, candidate[None].to(pipe.device, pipe.unet.dtype), seeds, renders, steps, guidance)
        faces = [f for f in pipe.face_analyzer.analyze_many(list(pixels), on_missing="skip", progress=False) if f]
        embedded = normalize(torch.stack([torch.as_tensor(f.embedding).float() for f in faces])) if faces else None
        resemblance.append(float((embedded @ population.T).mean()) if faces else float("nan"))
    scored = torch.tensor(resemblance)
    if scored.isnan().all():
        raise RuntimeError(f"no face in any of the {candidates * renders} renders of the candidate neutral identities")
    return pool[int(torch.where(scored.isnan(), torch.inf, scored).argmin())], resemblance


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW folder (images/, peopleDevTest.txt)")
    parser.add_argument("--forget", type=int, default=5, help="people per forgetting request (two requests)")
    parser.add_argument("--retained", type=int, default=50, help="trained people who must be kept")
    parser.add_argument("--held-out", type=int, default=20, help="DevTest people (never trained on)")
    parser.add_argument("--renders", type=int, default=2, help="renders (seeds) per render photo")
    parser.add_argument("--gallery", type=int, default=8, help="gallery photos per person at most")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--forget-steps", type=int, default=100, help="training steps per forgetting request")
    parser.add_argument("--nearby", type=int, default=4,
                        help="perturbed copies of each forgotten vector per training step (nearby_per_identity)")
    parser.add_argument("--radius", type=float, default=0.5,
                        help="forget every vector with cosine ≥ this to a forgotten one (GeneratorForgetConfig.radius)")
    parser.add_argument("--neutral", choices=("chosen", "mean"), default="chosen",
                        help="what forgotten people turn into: choose_neutral's pick, or the mean face")
    parser.add_argument("--candidates", type=int, default=16, help="random identities choose_neutral renders")
    parser.add_argument("--population", type=int, default=500,
                        help="trained people (one photo each, none of those measured) choose_neutral compares with")
    parser.add_argument("--random", type=int, default=16,
                        help="fresh random identities per training step (random_per_step)")
    parser.add_argument("--guard-threshold", type=float, default=None,
                        help="guard cosine threshold (default: best accuracy on LFW's pairsDevTest)")
    parser.add_argument("--batch-people", type=int, default=16, help="render vectors per pipeline call")
    parser.add_argument("--seed", type=int, default=0, help="which people are drawn")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output-dir", default="runs/mini-forgetting")
    return parser.parse_args()


@dataclass
class Cohort:
    """Who takes part: two forgetting requests of trained people, retained trained people, held-out
    people, the render set of each group, and each request's protected vectors (photos 1–3)."""

    faces: object
    people: dict[str, Person]
    trained: list[Person]
    requests: list[list[Person]]
    retained: list[Person]
    held_out: list[Person]
    sets: dict[str, RenderSet]
    protected: list[torch.Tensor]

    @property
    def forgotten(self) -> list[Person]:
        return self.requests[0] + self.requests[1]


def choose_people(args) -> Cohort:
    """Draw the people (``--seed``): forgotten ones with at least 6 photos, retained with 3."""
    lfw = Path(args.lfw)
    faces = mini_lfw_faces(lfw)
    people = people_by_name(faces)
    held_out_names = read_people([lfw / "peopleDevTest.txt", lfw / "pairsDevTest.txt"])  # as in training
    trained = [people[n] for n in sorted(people) if n not in held_out_names]
    order = np.random.default_rng(args.seed).permutation(len(trained))
    trained = [trained[i] for i in order]
    eligible = [p for p in trained if len(p.files) >= 6]
    requests = [eligible[:args.forget], eligible[args.forget:2 * args.forget]]
    forgotten_names = {p.name for request in requests for p in request}
    retained = [p for p in trained if len(p.files) >= 3 and p.name not in forgotten_names][:args.retained]
    held_out = [people[n] for n in sorted(held_out_names) if n in people and len(people[n].files) >= 2]
    held_out = [held_out[i] for i in np.random.default_rng(args.seed).permutation(len(held_out))[:args.held_out]]
    sets = {"forgotten 1": render_set(requests[0], slice(3, 6)), "forgotten 2": render_set(requests[1], slice(3, 6)),
            "retained": render_set(retained, slice(1, 2)), "held-out": render_set(held_out, slice(1, 2))}
    protected = [torch.cat([p.vectors[:3] for p in request]) for request in requests]
    return Cohort(faces, people, trained, requests, retained, held_out, sets, protected)


def check_guard(args, cohort: Cohort) -> tuple[dict, RenderSet, RenderSet | None]:
    """The guard on the requests' protected vectors: what it refuses, the evading request, and the
    forgotten render vectors it lets through (``None`` when it refuses them all)."""
    lfw, sets, requests = Path(args.lfw), cohort.sets, cohort.requests
    pairs = read_pairs(lfw / "pairsDevTest.txt", lfw / "images")
    vector_of = dict(zip(cohort.faces.files, normed(cohort.faces.id_embeds)))
    usable = [p for p in pairs if p.first in vector_of and p.second in vector_of]
    pair_scores = np.array([vector_of[p.first] @ vector_of[p.second] for p in usable])
    threshold = args.guard_threshold if args.guard_threshold is not None else best_threshold(
        pair_scores, np.array([p.same for p in usable]))
    guard = IdentityGuard(torch.cat(cohort.protected), threshold=threshold,
                          names=[p.name for request in requests for p in request for _ in range(3)])

    def refused(vectors: torch.Tensor) -> np.ndarray:
        hits = {m.index for m in guard.matches(vectors)} if len(vectors) else set()
        return np.array([i in hits for i in range(len(vectors))], dtype=bool)

    forgotten_names = {p.name for p in cohort.forgotten}
    others = [p for name, p in cohort.people.items() if name not in forgotten_names]
    results = {
        "threshold": threshold, "threshold_from": "--guard-threshold" if args.guard_threshold is not None
        else f"best accuracy on {len(usable)} pairsDevTest pairs",
        "forgotten_other_photos_refused": float(refused(torch.cat([p.vectors[3:] for p in cohort.forgotten])).mean()),
        "retained_photos_refused": float(refused(torch.cat([p.vectors for p in cohort.retained])).mean()),
        "held_out_photos_refused": float(refused(torch.cat([p.vectors for p in cohort.held_out])).mean()),
        "all_other_lfw_photos_refused": float(refused(torch.cat([p.vectors for p in others])).mean()),
    }
    forgotten_renders = torch.cat([sets["forgotten 1"].vectors, sets["forgotten 2"].vectors])
    forgotten_owners = np.concatenate([sets["forgotten 1"].owners, args.forget + sets["forgotten 2"].owners])
    passed = ~refused(forgotten_renders)
    own_protected = torch.stack([normalize(cohort.protected[o // args.forget][3 * (o % args.forget):3 * (o % args.forget) + 3]
                                           .mean(0)) for o in forgotten_owners])
    evade = RenderSet(cohort.forgotten, evading(forgotten_renders, own_protected, guard), forgotten_owners,
                      sets["forgotten 1"].render_files | sets["forgotten 2"].render_files)
    results["evading_cosine_to_original"] = float((normalize(forgotten_renders) * evade.vectors).sum(1).mean())
    passing = (RenderSet(cohort.forgotten, forgotten_renders[passed], forgotten_owners[passed], set())
               if passed.any() else None)
    return results, evade, passing


def gallery_scorer(args, cohort: Cohort):
    """``similarities(images, render_set)``: dlib cosines of renders to their person's gallery
    (``genuine``), to everybody else's (``impostor``) and to each forgotten group's (``against``)."""
    scorer = FaceAnalyzer.from_backend("dlib", "dlib")
    render_scorer = FaceAnalyzer.from_backend("dlib", "dlib", min_side=MINI_FACE_BACKENDS["min_side"], fallback_box=0.7)
    sets = cohort.sets
    gallery_people = cohort.forgotten + cohort.retained + cohort.held_out
    excluded = set().union(*(s.render_files for s in sets.values()))
    gallery_files = [[f for f in p.files if f not in excluded][:args.gallery] for p in gallery_people]
    flat = [f for files in gallery_files for f in files]
    embedded = scorer.analyze_many(flat, on_missing="skip", progress=True)
    gallery_owner = np.repeat(np.arange(len(gallery_people)), [len(files) for files in gallery_files])
    found = np.array([face is not None for face in embedded])
    gallery = normed([face.embedding for face in embedded if face is not None])
    gallery_owner = gallery_owner[found]
    index_of = {p.name: i for i, p in enumerate(gallery_people)}

    def similarities(images: np.ndarray, render: RenderSet) -> dict:
        vectors = normed([f.embedding for f in render_scorer.analyze_many(list(images), on_missing="raise", progress=False)])
        scores = vectors @ gallery.T
        owner = np.array([index_of[render.people[o].name] for o in render.owners])
        same = owner[:, None] == gallery_owner[None, :]
        genuine = np.array([row[mask].mean() for row, mask in zip(scores, same)])
        impostor = np.array([row[~mask].mean() for row, mask in zip(scores, same)])
        # mean score against each forgotten group's galleries (its per-gallery impostor level)
        groups = {name: np.isin(gallery_owner, [index_of[p.name] for p in sets[name].people])
                  for name in ("forgotten 1", "forgotten 2")}
        return {"genuine": genuine.tolist(), "impostor": impostor.tolist(),
                "against": {name: scores[:, columns].mean(1).tolist() for name, columns in groups.items()}}

    return similarities


def render_and_forget(args, cohort: Cohort, similarities, evade: RenderSet, passing: RenderSet | None):
    """Render and score every set, forget request 1, render and score, forget request 2, render and
    score: the scores by (state, set), each request's training metrics, and the neutral identity."""
    pipe = load_mini_pipeline("cpu" if not torch.cuda.is_available() else None)
    pipe.set_progress_bar_config(disable=True)
    sets, trained, scores, requests_out = cohort.sets, cohort.trained, {}, []

    def measure(state: str, extra: dict[str, RenderSet]) -> None:
        for name, render_on in tqdm({**sets, **extra}.items(), desc=f"scoring {state}", leave=False):
            ids = render_on.vectors.to(pipe.device, pipe.unet.dtype)
            images = render(pipe, ids, args.renders, args.batch_people, args.steps, args.guidance)
            scores[(state, name)] = similarities(images, RenderSet(render_on.people, ids,
                                                                   np.repeat(render_on.owners, args.renders), set()))
        tqdm.write(f"{state}: " + ", ".join(f"{name} {np.mean(scores[(state, name)]['genuine']):.3f}"
                                           for name in {**sets, **extra}))  # the story so far, if the run is cut short

    # what the forgotten people turn into, and its floor: the neutral identity rendered with the
    # forgotten renders' seeds, scored against the same people's galleries (not an impostor level)
    forgotten_groups = ("forgotten 1", "forgotten 2")
    bystanders = None
    if args.neutral == "mean":
        neutral, resemblance = normalize(normalize(torch.cat([p.vectors for p in trained])).mean(0)), None
    else:  # judged against trained people who play no part in the measurement
        measured = {p.name for s in sets.values() for p in s.people}
        bystanders = torch.stack([p.vectors[0] for p in trained if p.name not in measured][:args.population])
        neutral, resemblance = choose_neutral(pipe, bystanders, candidates=args.candidates, seed=args.seed,
                                              steps=args.steps, guidance=args.guidance)
    firsts = normalize(torch.stack([p.vectors[0] for p in trained]))  # one photo per trained person
    closeness = {"between two trained people": similarity_stats(firsts).mean_cosine,
                 **{f"neutral to {name}": float((normalize(sets[name].vectors) @ neutral).mean()) for name in forgotten_groups}}
    floors = {f"{NEUTRAL} {name}": RenderSet(sets[name].people, neutral.expand(len(sets[name].vectors), -1),
                                              sets[name].owners, set()) for name in forgotten_groups}
    measure(STATES[0], {"evading guard": evade, **floors, **({"passing guard": passing} if passing else {})})
    pinned = torch.cat([p.vectors[:1] for p in cohort.retained])
    for number, request in enumerate(cohort.requests, start=1):
        keep = pinned if number == 1 else torch.cat([pinned, cohort.protected[0]])
        result = forget_identities(pipe, cohort.protected[number - 1], retain=keep, neutral=neutral,
                                   steps=args.forget_steps, warmup_steps=args.forget_steps // 2,
                                   nearby_per_identity=args.nearby, radius=args.radius, random_per_step=args.random)
        requests_out.append({"people": [p.name for p in request], "metrics": result.metrics})
        measure(STATES[number], {"evading guard": evade} if number == 2 else {})
    neutral_info = {"kind": args.neutral, "identity": neutral.tolist(), "mobilefacenet_cosine": closeness,
                    "candidates_resemblance": resemblance,
                    "bystanders": None if bystanders is None else len(bystanders)}
    return scores, requests_out, neutral_info


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def summarize(scores: dict) -> dict:
    """Per set and state: genuine mean ± standard error and impostor level; per state the impostor
    level over all sets; the others' scores against each forgotten group; whether the targets are met."""
    table = {}
    for (state, name), value in scores.items():
        genuine, se = mean_and_se(value["genuine"])
        table.setdefault(name, {})[state] = {"genuine": genuine, "genuine_se": se,
                                             "impostor": float(np.mean(value["impostor"])), "renders": len(value["genuine"])}
    impostor = {state: float(np.mean([v["impostor"][i] for (s, name), v in scores.items()
                                      if s == state and not name.startswith(NEUTRAL)
                                      for i in range(len(v["impostor"]))])) for state in STATES}
    forgotten_groups = ("forgotten 1", "forgotten 2")
    others_against = {group: {state: float(np.mean([x for name in ("retained", "held-out")
                                                    for x in scores[(state, name)]["against"][group]]))
                              for state in STATES} for group in forgotten_groups}
    last = STATES[-1]
    targets = {
        "forgotten_at_impostor_level": all(
            table[n][last]["genuine"] <= min(impostor[last], others_against[n][last]) + 2 * table[n][last]["genuine_se"]
            for n in forgotten_groups),
        "retained_drop": table["retained"][STATES[0]]["genuine"] - table["retained"][last]["genuine"],
    }
    targets["retained_drop_at_most_0.03"] = targets["retained_drop"] <= 0.03
    return {"impostor_level": impostor, "others_against_forgotten": others_against, "sets": table, "targets": targets}


def print_summary(args, results: dict, out: Path) -> None:
    """The markdown table and the guard's and the targets' lines."""
    table, impostor, targets = results["sets"], results["impostor_level"], results["targets"]
    print(f"mini model, {args.renders} renders per photo, {args.steps} steps, guidance {args.guidance}; "
          f"dlib cosine of renders to the person's other photos (± standard error)")
    print("| renders from | " + " | ".join(STATES) + " |\n|---|" + "---|" * len(STATES))
    for name, row in table.items():
        cells = [f"{row[s]['genuine']:.3f} ± {row[s]['genuine_se']:.3f}" if s in row else "–" for s in STATES]
        print(f"| {name} ({row[STATES[0]]['renders']}) | " + " | ".join(cells) + " |")
    print("| impostor level | " + " | ".join(f"{impostor[s]:.3f}" for s in STATES) + " |")
    for group, levels in results["others_against_forgotten"].items():
        print(f"| others against {group} | " + " | ".join(f"{levels[s]:.3f}" for s in STATES) + " |")
    neutral = results["neutral"]
    print("MobileFaceNet cosine (mean): " + ", ".join(f"{name} {value:.3f}"
                                                      for name, value in neutral["mobilefacenet_cosine"].items()))
    resemblance = neutral["candidates_resemblance"]
    if resemblance:
        print(f"choose_neutral: mean MobileFaceNet cosine of the renders to {neutral['bystanders']} trained people, the pick "
              f"{np.nanmin(resemblance):.3f}, the candidates " + ", ".join(f"{x:.3f}" for x in resemblance))
    g = results["guard"]
    print(f"guard (threshold {g['threshold']:.3f}, {g['threshold_from']}): refuses "
          f"{100 * g['forgotten_other_photos_refused']:.1f} % of the forgotten people's other photos; wrongly refuses "
          f"{100 * g['retained_photos_refused']:.1f} % of retained, {100 * g['held_out_photos_refused']:.1f} % of held-out, "
          f"{100 * g['all_other_lfw_photos_refused']:.2f} % of all other LFW photos; evading vectors keep cosine "
          f"{g['evading_cosine_to_original']:.3f} to the originals")
    print(f"targets: forgotten at impostor level {targets['forgotten_at_impostor_level']}; retained drop "
          f"{targets['retained_drop']:.3f} (≤ 0.03: {targets['retained_drop_at_most_0.03']}); "
          f"{results['seconds'] / 60:.1f} min; wrote {out / 'results.json'}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    cohort = choose_people(args)
    guard_results, evade, passing = check_guard(args, cohort)
    similarities = gallery_scorer(args, cohort)
    scores, requests_out, neutral = render_and_forget(args, cohort, similarities, evade, passing)
    results = {"settings": vars(args), "people": {name: [p.name for p in s.people] for name, s in cohort.sets.items()},
               **summarize(scores), "neutral": neutral, "requests": requests_out, "guard": guard_results,
               "seconds": time.time() - started}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results)
    print_summary(args, results, out)


if __name__ == "__main__":
    main()
