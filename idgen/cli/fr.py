"""``idgen fr train``: train a compact face recogniser on an ImageFolder / parquet / WebDataset face set."""

from __future__ import annotations

import json
from dataclasses import fields

CHOICES = {"format": ["auto", "imagefolder", "parquet", "webdataset"], "align": ["dlib", "box"],
           "head": ["arcface", "cosface"]}
HELP = {
    "format": "face-set format; auto decides by the files (a synth output folder -> its images/)",
    "align": "dlib: detect landmarks and align; box: the faces are already aligned (template in a centred box)",
    "box": "centred box, as a fraction of the shorter side, for --align box and where dlib finds no face",
    "upsample": "dlib detector upsampling; use the same with `idgen eval verify --upsample`",
    "cache_dir": "aligned crops are cached here",
    "head": "margin head",
    "margin": "margin; None: 0.5 for ArcFace, 0.35 for CosFace",
    "scale": "logit scale s of the margin head",
    "width": "MobileFaceNet channel multiplier",
    "input_size": "crop side in pixels (a multiple of 16)",
    "warmup": "fraction of the steps with a linear learning-rate warm-up (then cosine decay)",
}


def register(subparsers) -> None:
    from ..fr.train import TrainConfig

    parser = subparsers.add_parser("fr", help="train face-recognition models")
    commands = parser.add_subparsers(dest="fr_command", metavar="FR_COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train MobileFaceNet with an ArcFace/CosFace margin head",
        description="Train on a face set (ImageFolder, parquet shards or WebDataset shards, e.g. the output of "
                    "`idgen dataset generate`). Writes model.safetensors + config.json to --out; evaluate with "
                    "`idgen eval verify --recognizer <output>`. Several GPUs: `accelerate launch -m idgen.cli fr train ...`.",
    )
    train.add_argument("--data", required=True, help="ImageFolder, parquet file/folder, or WebDataset .tar/folder")
    train.add_argument("--out", dest="output", required=True, help="folder for model.safetensors and config.json")
    for field in fields(TrainConfig):
        if field.name in ("data", "output", "progress"):
            continue
        default = field.default
        kind = float if field.name in ("margin", "box") else str if default is None else type(default)
        train.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default, choices=CHOICES.get(field.name),
                           help=f"{HELP.get(field.name, field.name.replace('_', ' '))} (default: {default})")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    train.set_defaults(handler=run_train)


def run_train(args) -> int:
    from ..fr import TrainConfig, train_recognizer

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    summary = train_recognizer(config)
    from accelerate import PartialState

    if not PartialState().is_main_process:   # under `accelerate launch` every process trains; one reports
        return 0
    print(json.dumps(summary, indent=2))
    print(f"saved {config.output}/model.safetensors, config.json; evaluate with "
          f"`idgen eval verify --recognizer {config.output} ...`")
    return 0
