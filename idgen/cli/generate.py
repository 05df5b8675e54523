"""``idgen generate``: portraits of the person in a photo (or of a random identity), written to a folder
with each image's identity similarity to the input.

``--output-dir`` is a new or empty folder, or one an earlier ``idgen generate`` wrote (its
``similarities.json`` lists the images it made): a rerun replaces that output, removing the
earlier images it does not write again, and touches nothing else in the folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from ..config import Range
from ..errors import ConfigError
from ..io import check_output_folder, output_errors, remove_temporaries, write_json_atomic
from .common import add_model_arguments, add_sampling_options, add_style_option, chosen_style, describe_style, number

#: Images one command renders: all of them in one batch, on the device together.
COUNT = Range(1, 64)


#: How the model is chosen, for ``idgen generate --help``.
MODEL_CHOICE = (
    "Which model runs: the published Arc2Face (--base/--arc2face, 512x512) when its weights are "
    "downloaded, else the embedded mini model (64x64 faces, offline, ships with idgen; --model mini "
    "forces it). --model FOLDER runs a saved Arc2Face pipeline. --style instantid or infiniteyou "
    "(default when --instantid or --infiniteyou is given) switches to those, which take a --prompt "
    "and a --pose. The command prints the model it runs, and why, on its first line. `idgen doctor` "
    "lists the models on this machine and the command that downloads each missing one.")

#: The record of a run, written last: which images it made, with their seeds and similarities.
RECORD = "similarities.json"
#: The names ``actions.save_images`` gives; only files so named are ever removed from ``--output-dir``.
IMAGE_NAME = re.compile(r"image_\d{3,}\.png")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate images of a person from face photos (or of a random identity)",
        description="Generate images of the identity in --face (one person, one or more photos) with "
                    "Arc2Face, or with a --prompt through InstantID (--instantid) or InfiniteYou (--infiniteyou).",
        epilog=MODEL_CHOICE)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--face", action="append", metavar="PHOTO",
                        help="a photo of the person (repeat for several photos of the same person)")
    source.add_argument("--random-identity", action="store_true", help="a random identity instead of a photo")
    parser.add_argument("--output-dir", required=True, help="output folder (images + similarities.json)")
    parser.add_argument("--negative-prompt", default="", help="negative prompt (InstantID style only)")
    parser.add_argument("--pose", default=None, help="photo whose face pose to copy (InstantID and InfiniteYou styles)")
    add_style_option(parser)
    parser.add_argument("--count", type=number(int, COUNT), default=4,
                        help=f"images to generate, {COUNT.describe()}, in one batch (default 4)")
    parser.add_argument("--fast", action="store_true",
                        help="LCM-LoRA preset: the LCM-LoRA (--lcm-lora / --lcm-lora-sdxl) and the LCM scheduler, "
                             "4 steps at guidance 1 (Arc2Face) or 5 at 1.5 (InstantID); refused unless the LCM-LoRA is "
                             "downloaded (`hf download latent-consistency/lcm-lora-sdv1-5`, or name a folder)")
    add_sampling_options(parser)
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def _earlier_images(folder: Path) -> list[str] | None:
    """The images an earlier run listed in ``folder``'s record, or None if it has no such record."""
    try:
        record = json.loads((folder / RECORD).read_text())
        return [image["file"] for image in record["images"] if IMAGE_NAME.fullmatch(image["file"])]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _check_out(out: Path) -> list[str]:
    """Check ``--output-dir`` before any work (see the module docstring); returns the earlier run's images."""
    if not check_output_folder(out, "--output-dir", lambda folder: _earlier_images(folder) is not None):
        return []
    return _earlier_images(out)


def _publish(out: Path, images: list, details: list[dict], header: dict, earlier: list[str]) -> list[Path]:
    """Write ``images`` into ``out`` and the record (``header`` and, per image, its file name and
    ``details``): all staged first in a hidden folder inside ``out`` (a full disk stops the run there,
    the earlier output untouched), then the ``earlier`` images not written again are removed, the
    record moved in and the images after it, so every image in ``out`` is always listed by the record
    there. Returns the images' paths."""
    from ..application import actions

    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out, recursive=False)   # what a killed run left: only idgen's hidden names
    staging = Path(tempfile.mkdtemp(prefix=".generate.", suffix=".partial", dir=out))
    try:
        paths = actions.save_images(images, staging)
        records = [{"file": path.name, **detail} for path, detail in zip(paths, details)]
        write_json_atomic(staging / RECORD, {**header, "images": records})
        for name in set(earlier) - {path.name for path in paths}:
            (out / name).unlink(missing_ok=True)
        os.replace(staging / RECORD, out / RECORD)
        for path in paths:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / path.name for path in paths]


def run(args) -> int:
    from ..application import ModelHub, actions, settings_from_args
    from ..quiet import hide_loading_bars

    hide_loading_bars()   # the one bar is the job's own, below
    hub = ModelHub(settings_from_args(args))
    style = chosen_style(args, hub.settings)
    if style == "arc2face" and (args.prompt or args.negative_prompt or args.pose):
        raise ConfigError("--prompt/--negative-prompt/--pose need the InstantID style (--instantid FOLDER) or the "
                          "InfiniteYou style (--infiniteyou FOLDER); Arc2Face's only condition is the identity")
    if args.fast:
        actions.check_fast_preset(hub, style)
    out = Path(args.output_dir)
    earlier = _check_out(out)
    print(f"idgen: {style}: {describe_style(style, hub.settings)}")
    if args.random_identity:
        identity = actions.random_identity(hub, args.seed, style)
    else:
        identity = actions.identity_from_photos(hub, args.face, style)
    with tqdm(total=100, desc=f"{style}: {args.count} image(s)", unit="%") as bar:  # closed (own line) on errors too

        def progress(fraction, desc=None):
            if desc:
                bar.set_postfix_str(desc, refresh=False)
            bar.update(int(fraction * 100) - bar.n)

        results = actions.generate_images(hub, identity, style=style, count=args.count, seed=args.seed,
                                          steps=args.steps, guidance=args.guidance, fast=args.fast, prompt=args.prompt,
                                          negative_prompt=args.negative_prompt, pose_photo=args.pose, progress=progress)
    details = [{"seed": args.seed + k, "identity_similarity": similarity} for k, (_, similarity) in enumerate(results)]
    with output_errors("run the same command again"):
        paths = _publish(out, [image for image, _ in results], details,
                         {"source": identity.source, "style": style}, earlier)
    for path, detail in zip(paths, details):
        print(f"{path}: {actions.caption(detail['identity_similarity'])}")
    return 0
