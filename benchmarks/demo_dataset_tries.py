"""How many retries the demo's Dataset tab needs to keep an image of every identity on the mini model.

    python benchmarks/demo_dataset_tries.py [--seeds 0 1 2] [--identities 3] [--images 2] [--steps 25] [--max-retries 30]

Runs the Dataset tab's job (:func:`idgen.application.actions.make_dataset`, the embedded mini model,
its calibrated filter) once per seed with ``--max-retries`` retries per refused image. Each try of an
image has its own seed and the filter compares it with its identity's vector alone (no duplicate
test), so a try is kept or refused whatever the retry limit is: the run with many retries also says
what a run with fewer would have kept. It prints, per seed and identity, the images kept, the renders
made and the try that kept the identity's first image; then, per retry limit, how many identities of
all runs would keep at least one image. Each kept image is printed as it is written (with the renders
made so far), so a run stopped early still says what it found.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from idgen.application import ModelHub, ModelSettings, actions


def first_keeps(folder: Path, identities: int) -> tuple[list[int | None], list[dict]]:
    """Per identity: the try (1 = first render) that kept its first image (None: none kept), and its
    journal counts."""
    entries = {}
    for path in (folder / "journal").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            entries[entry["identity"]] = entry
    firsts = [min((image["attempt"] + 1 for image in entries[i]["images"]), default=None) for i in range(identities)]
    return firsts, [entries[i]["counts"] for i in range(identities)]


class KeptAsTheyCome:
    """A progress callback that prints each kept image as it is written, with the renders decoded so
    far (counted at ``pipe``'s VAE decoder): a run stopped early still says what it found."""

    def __init__(self, pipe):
        self.work, self.started, self.seen, self.renders = None, 0.0, set(), 0
        pipe.vae.decoder.register_forward_hook(self.decoded)

    def start(self, work: Path) -> "KeptAsTheyCome":
        self.work, self.started, self.seen, self.renders = work, time.perf_counter(), set(), 0
        return self

    def decoded(self, module, inputs, output):
        self.renders += len(output)

    def __call__(self, fraction, desc=None):
        for path in sorted(self.work.glob(".dataset.*/images/*/*.jpg")):
            if path.parent.name + path.name not in self.seen:
                self.seen.add(path.parent.name + path.name)
                print(f"  kept {path.parent.name}/{path.name} after {self.renders} renders of this run, "
                      f"{time.perf_counter() - self.started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--identities", type=int, default=3)
    parser.add_argument("--images", type=int, default=2, help="images per identity")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--max-retries", type=int, default=30)
    args = parser.parse_args()

    hub = ModelHub(ModelSettings(model="mini"))
    watch = KeptAsTheyCome(hub.arc2face())
    print("| seed | identity | kept | renders | no face | below threshold | try of the first kept image | wall (run) |")
    print("|---|---|---|---|---|---|---|---|")
    every_first = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            result = actions.make_dataset(hub, Path(work), identities=args.identities, images_per_identity=args.images,
                                          seed=seed, steps=args.steps, max_retries=args.max_retries,
                                          progress=watch.start(Path(work)))
            wall = time.perf_counter() - started
            firsts, counts = first_keeps(result["folder"], args.identities)
        every_first += firsts
        for identity, (first, count) in enumerate(zip(firsts, counts)):
            print(f"| {seed} | {identity} | {count['kept']} | {count['generated']} | {count['no_face']} | "
                  f"{count['low_similarity']} | {first or 'none'} | {wall:.0f} s |", flush=True)
    print(f"\nidentities with at least one image kept, of {len(every_first)} "
          f"({len(args.seeds)} seeds × {args.identities}), by retry limit:")
    for retries in range(args.max_retries + 1):
        kept = sum(first is not None and first <= retries + 1 for first in every_first)
        print(f"  max_retries {retries:3d}: {kept}")


if __name__ == "__main__":
    main()
