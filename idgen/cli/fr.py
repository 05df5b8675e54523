"""``idgen fr train``: train a compact face recogniser on an ImageFolder / parquet / WebDataset set."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    from ..fr.train import TrainConfig

    parser = subparsers.add_parser("fr", help="face-recognition models")
    commands = parser.add_subparsers(dest="fr_command", metavar="FR_COMMAND")
    train = commands.add_parser(
        "train", help="train MobileFaceNet with an ArcFace/CosFace head",
        description="Train on a face set (ImageFolder folder, parquet, or WebDataset shards, e.g. the output of "
                    "`idgen dataset generate`). Saves model.safetensors + config.json; evaluate with "
                    "`idgen eval verify --recognizer <output folder>`. Multi-GPU: `accelerate launch -m idgen.cli fr train ...`.",
    )
    train.add_argument("--data", required=True, help="ImageFolder, parquet file/folder, or WebDataset .tar/folder")
    train.add_argument("--output", required=True, help="folder for model.safetensors and config.json")
    defaults = TrainConfig(data="", output="")
    for name in ("head", "margin", "scale", "width", "input_size", "embedding_size", "crop", "epochs", "batch_size",
                 "lr", "weight_decay", "workers", "seed"):
        value = getattr(defaults, name)
        kind = type(value) if value is not None else float
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value, help=f"(default: {value})")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    train.set_defaults(handler=run_train)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def run_train(args) -> int:
    from ..fr import TrainConfig, train_recognizer

    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    print(json.dumps(train_recognizer(TrainConfig(**fields)), indent=2))
    return 0
