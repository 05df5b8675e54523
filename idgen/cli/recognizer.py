"""``idgen recognizer train --arch {mobilefacenet,iresnet,face-transformer}``: train a face recogniser.

One command for every backbone. ``--arch mobilefacenet`` trains MobileFaceNet, ``--arch iresnet`` an
IResNet (``--depth 18|34|50|100``), with an ArcFace, CosFace or AdaFace margin head on any face set
(ImageFolder, parquet or WebDataset shards; accelerate, several processes; one trainer,
:func:`idgen.recognition.train_mobilefacenet`); their folders are :mod:`idgen.faces` recognisers.
``--arch face-transformer`` trains a
Face Transformer classifier on an ``<identity>/<image>`` folder (a fixed train/test split per
identity, optional distillation), the recogniser that ``idgen forget`` edits.

The older commands stay as aliases, with their own flags: ``idgen fr train`` is ``--arch
mobilefacenet`` and ``idgen train-recognizer FOLDER`` is ``--arch face-transformer --data FOLDER``
(``--image-size`` is ``--input-size``). They print a note naming the new command, turn their flags
into the same options (:func:`train_options`) and run the same trainer.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

ARCHS = ("mobilefacenet", "iresnet", "face-transformer")
#: The backbones of the embedding trainer (:mod:`idgen.recognition.mobilefacenet`).
EMBEDDING_ARCHS = ("mobilefacenet", "iresnet")
#: Alignments each backbone's data reader offers.
ALIGNMENTS = {"mobilefacenet": ("dlib", "box"), "iresnet": ("dlib", "box"), "face-transformer": ("dlib", "resize")}
#: Where ``--arch iresnet``'s defaults differ from MobileFaceNet's (insightface's IResNet recipe).
IRESNET_DEFAULTS = {"embedding_size": 512, "scale": 64.0}
#: Config fields that are not flags of ``--arch mobilefacenet`` (``--arch`` itself sets ``backbone``).
NOT_MOBILEFACENET = ("backbone", "depth")

HELP = {
    "format": "face-set format; auto decides by the files (a synth output folder -> its images/)",
    "align": "dlib: detect landmarks and align; box: the faces are already aligned (template in a centred box)",
    "box": "centred box, as a fraction of the shorter side, for --align box and where dlib finds no face",
    "upsample": "dlib detector upsampling; use the same with `idgen eval verify --upsample`",
    "cache_dir": "aligned crops are cached here",
    "head": "margin head (adaface: the margin adapts to each image's feature norm)",
    "margin": "margin; None: 0.5 for ArcFace, 0.35 for CosFace, 0.4 for AdaFace",
    "scale": "logit scale s of the margin head",
    "width": "channel multiplier",
    "depth": "IResNet depth (IR-18, IR-34, IR-50, IR-100)",
    "embedding_size": "embedding size",
    "input_size": "crop side in pixels (a multiple of 16)",
    "warmup": "fraction of the steps with a linear learning-rate warm-up (then cosine decay)",
}
CHOICES = {"format": ["auto", "imagefolder", "parquet", "webdataset"], "align": ["dlib", "box"],
           "head": ["arcface", "cosface", "adaface"], "depth": [18, 34, 50, 100]}

#: ``idgen train-recognizer``'s defaults (the Face Transformer options of ``idgen recognizer train``).
FACE_TRANSFORMER_DEFAULTS = {
    "preset": "cpu-small", "input_size": None, "align": "dlib", "min_images": 2, "test_fraction": 0.25,
    "max_train": None, "epochs": 30, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.05,
    "cache_dir": ".cache/faces", "seed": 0, "progress": True, "distill_from": None, "distill_weight": 10.0,
    "distill_images": None, "distill_max_images": 0,
}
#: Backbone-only flags that other commands have too: they keep the one default every command gives them
#: (a backbone without the option takes only that value).
SHARED_DEFAULTS = {"upsample": 0}
#: The Face Transformer-only options: (name, argparse keywords, help).
TRANSFORMER_OPTIONS = [
    ("preset", {}, "model size: paper, cpu-small, cpu-tiny"),
    ("min_images", {"type": int}, "skip identities with fewer images"),
    ("test_fraction", {"type": float}, "share of each identity's images held out as its test images"),
    ("max_train", {"type": int}, "at most this many training images per identity"),
    ("distill_from", {"metavar": "TEACHER"},
     "also match a pretrained recogniser's embeddings: mobilefacenet:PATH or an ONNX path"),
    ("distill_weight", {"type": float}, "weight of 1 − cos(student, teacher)"),
    ("distill_images", {"metavar": "FOLDER"},
     "extra <identity>/<image> photos to distil on; identities that are classes are skipped"),
    ("distill_max_images", {"type": int}, "how many extra photos (a seeded draw)"),
]


def defaults(arch: str) -> dict:
    """Every option of ``arch`` with its default (``data`` and ``output`` are required)."""
    if arch in EMBEDDING_ARCHS:
        from ..recognition import MobileFaceNetTrainConfig

        skip = ("data", "output", "backbone", *(NOT_MOBILEFACENET if arch == "mobilefacenet" else ()))
        options = {f.name: f.default for f in fields(MobileFaceNetTrainConfig) if f.name not in skip}
        return {**options, **(IRESNET_DEFAULTS if arch == "iresnet" else {})}
    return dict(FACE_TRANSFORMER_DEFAULTS)


# --- idgen recognizer train -----------------------------------------------------------------------

def register(subparsers) -> None:
    parser = subparsers.add_parser("recognizer", help="train face recognisers (MobileFaceNet, IResNet, Face Transformer)")
    commands = parser.add_subparsers(dest="recognizer_command", metavar="RECOGNIZER_COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a recogniser: MobileFaceNet, IResNet or a Face Transformer (--arch)",
        description="--arch mobilefacenet / --arch iresnet (--depth 18|34|50|100): MobileFaceNet or insightface's "
                    "IResNet with an ArcFace, CosFace or AdaFace margin head on a face set "
                    "(ImageFolder, parquet or WebDataset shards, e.g. the output of `idgen dataset generate`); the "
                    "folder it writes (model.safetensors + config.json) is a recogniser for `idgen eval verify "
                    "--recognizer <output>`; several GPUs: `accelerate launch -m idgen.cli recognizer train ...`. "
                    "--arch face-transformer: a Face Transformer classifier on an <identity>/<image> folder: the "
                    "faces are aligned (dlib; cached), every identity is split into train/test images, the model "
                    "is trained (optionally distilling a pretrained recogniser, --distill-from) and saved "
                    "(config.json + model.safetensors), the recogniser `idgen forget` edits. "
                    "Options of the other backbone are refused.",
    )
    s = argparse.SUPPRESS   # unset options whose default differs take the backbone's (see defaults())
    train.add_argument("--arch", required=True, choices=ARCHS, help="which recogniser to train")
    train.add_argument("--data", required=True,
                       help="mobilefacenet, iresnet: ImageFolder, parquet file/folder, or WebDataset .tar/folder; "
                            "face-transformer: a face folder, one sub-folder per identity")
    train.add_argument("--out", dest="output", required=True, help="folder for model.safetensors and config.json")
    both = train.add_argument_group("training (every backbone; defaults: mobilefacenet and iresnet / face-transformer)")
    both.add_argument("--epochs", type=int, default=s, help="epochs (default: 10 / 30)")
    both.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    both.add_argument("--lr", type=float, default=s, help="peak learning rate (default: 0.1 SGD / 1e-3 AdamW)")
    both.add_argument("--weight-decay", type=float, default=s, help="weight decay (default: 5e-4 / 0.05)")
    both.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    both.add_argument("--align", choices=["dlib", "box", "resize"], default="dlib",
                      help="dlib: detect landmarks and align (default); box (mobilefacenet, iresnet): the faces are already "
                           "aligned, template in a centred box; resize (face-transformer): the faces are already "
                           "cropped, resized")
    both.add_argument("--input-size", type=int, default=s,
                      help="crop side in pixels (default: 112 / the preset's; mobilefacenet, iresnet: a multiple of 16)")
    both.add_argument("--cache-dir", default=".cache/faces", help="aligned crops are cached here (default: .cache/faces)")
    both.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    mobile = train.add_argument_group("--arch mobilefacenet and --arch iresnet")
    for field in _mobilefacenet_fields():
        _add_field(mobile, field, SHARED_DEFAULTS.get(field.name, s))
    iresnet = train.add_argument_group("--arch iresnet only")
    for field in _fields("depth"):
        _add_field(iresnet, field, s)
    transformer = train.add_argument_group("--arch face-transformer only")
    for name, extra, text in TRANSFORMER_OPTIONS:
        _add(transformer, name, s, text, FACE_TRANSFORMER_DEFAULTS[name], **extra)
    train.set_defaults(handler=run, route="recognizer train")
    _register_aliases(subparsers)


def _fields(*names):
    from ..recognition import MobileFaceNetTrainConfig

    return [f for f in fields(MobileFaceNetTrainConfig) if f.name in names]


def _mobilefacenet_fields():
    """The fields of the embedding trainer's config that are flags of --arch mobilefacenet and iresnet
    (the ones every backbone has are defined above; --arch sets ``backbone``; ``depth`` is IResNet's)."""
    from ..recognition import MobileFaceNetTrainConfig

    shared = {"data", "output", "progress", "epochs", "batch_size", "lr", "weight_decay", "seed", "align",
              "input_size", "cache_dir", *NOT_MOBILEFACENET}
    return [f for f in fields(MobileFaceNetTrainConfig) if f.name not in shared]


def _add(group, name: str, default, text: str, shown, **extra) -> None:
    """``--name-with-dashes`` for the option ``name``; ``shown`` is the default the help names."""
    group.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"{text} (default: {shown})", **extra)


def _add_field(group, field, default, iresnet: bool = True) -> None:
    """The flag of a MobileFaceNetTrainConfig field (its help names the field's default, and IResNet's where
    that differs and ``iresnet``)."""
    kind = float if field.name in ("margin", "box") else str if field.default is None else type(field.default)
    shown = field.default
    if iresnet and field.name in IRESNET_DEFAULTS:
        shown = f"{field.default}; iresnet: {IRESNET_DEFAULTS[field.name]}"
    _add(group, field.name, default, HELP.get(field.name, field.name.replace("_", " ")), shown, type=kind,
         choices=CHOICES.get(field.name))


# --- the old names ------------------------------------------------------------------------------

#: What each old command prints before running (on stderr).
NOTES = {
    "fr train": "`idgen fr train` is an old name of `idgen recognizer train --arch mobilefacenet` (same flags); "
                "it still works",
    "train-recognizer": "`idgen train-recognizer FOLDER` is an old name of `idgen recognizer train --arch "
                        "face-transformer --data FOLDER` (--image-size is --input-size); it still works",
}


def _register_aliases(subparsers) -> None:
    from ..recognition import MobileFaceNetTrainConfig

    parser = subparsers.add_parser("fr", help="old name of `idgen recognizer` (MobileFaceNet)")
    commands = parser.add_subparsers(dest="fr_command", metavar="FR_COMMAND", required=True)
    train = commands.add_parser(
        "train", help="old name of `idgen recognizer train --arch mobilefacenet`",
        description="The old name of `idgen recognizer train --arch mobilefacenet`, with the same flags: train "
                    "MobileFaceNet with an ArcFace, CosFace or AdaFace margin head on a face set (ImageFolder, parquet shards "
                    "or WebDataset shards, e.g. the output of `idgen dataset generate`). Writes model.safetensors "
                    "+ config.json to --out; evaluate with `idgen eval verify --recognizer <output>`.",
    )
    train.add_argument("--data", required=True, help="ImageFolder, parquet file/folder, or WebDataset .tar/folder")
    train.add_argument("--out", dest="output", required=True, help="folder for model.safetensors and config.json")
    for field in fields(MobileFaceNetTrainConfig):
        if field.name not in ("data", "output", "progress", *NOT_MOBILEFACENET):
            _add_field(train, field, field.default, iresnet=False)
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    train.set_defaults(handler=run, route="fr train")

    old = subparsers.add_parser(
        "train-recognizer", help="old name of `idgen recognizer train --arch face-transformer`",
        description="The old name of `idgen recognizer train --arch face-transformer --data FOLDER` (its "
                    "--image-size is --input-size there): aligns the faces (dlib; cached), splits every identity "
                    "into train/test images, trains the model (optionally distilling a pretrained recogniser, "
                    "--distill-from) and saves config.json + model.safetensors to --out.",
    )
    old.add_argument("folder", help="face folder, one sub-folder per identity")
    old.add_argument("--out", required=True, help="output folder for the recogniser")
    old.add_argument("--image-size", type=int, default=None, help="crop size (default: the preset's)")
    old.add_argument("--align", default="dlib", choices=["dlib", "resize"],
                     help="dlib: detect and align; resize: faces are already cropped")
    old.add_argument("--epochs", type=int, default=30)
    old.add_argument("--batch-size", type=int, default=64)
    old.add_argument("--lr", type=float, default=1e-3)
    old.add_argument("--cache-dir", default=".cache/faces", help="aligned-crop cache")
    old.add_argument("--seed", type=int, default=0)
    for name, extra, text in TRANSFORMER_OPTIONS:
        _add(old, name, FACE_TRANSFORMER_DEFAULTS[name], text, FACE_TRANSFORMER_DEFAULTS[name], **extra)
    old.set_defaults(handler=run, route="train-recognizer")


# --- one request, whichever name it came by --------------------------------------------------------

def train_options(args) -> tuple[str, dict]:
    """``(arch, options)`` of a parsed ``recognizer train`` / ``fr train`` / ``train-recognizer``: every
    option of that backbone, defaults filled in; the same request gives the same pair by every name."""
    from ..errors import ConfigError

    if args.route == "fr train":
        return "mobilefacenet", {name: getattr(args, name) for name in ["data", "output", *defaults("mobilefacenet")]}
    if args.route == "train-recognizer":
        options = {name: getattr(args, name, value) for name, value in defaults("face-transformer").items()}
        return "face-transformer", {**options, "data": args.folder, "output": args.out, "input_size": args.image_size}
    arch, options = args.arch, {**defaults(args.arch), "data": args.data, "output": args.output}
    given = {name: value for name, value in vars(args).items()
             if name not in ("arch", "route", "handler", "command", "recognizer_command")}
    other = sorted(name for name, value in given.items()
                   if name not in options and not (name in SHARED_DEFAULTS and value == SHARED_DEFAULTS[name]))
    if other:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in other)
        raise ConfigError(f"{flags}: not an option of --arch {arch} (see `idgen recognizer train --help`)")
    options.update((name, value) for name, value in given.items() if name in options)
    if options["align"] not in ALIGNMENTS[arch]:
        raise ConfigError(f"--align {options['align']}: --arch {arch} aligns with {' or '.join(ALIGNMENTS[arch])}")
    return arch, options


def run(args) -> int:
    if args.route in NOTES:
        print(f"idgen: note: {NOTES[args.route]}", file=sys.stderr)
    arch, options = train_options(args)
    return train_mobilefacenet(options, arch) if arch in EMBEDDING_ARCHS else train_face_transformer(options)


def train_mobilefacenet(options: dict, arch: str = "mobilefacenet") -> int:
    """``--arch mobilefacenet`` or ``--arch iresnet``: the embedding trainer with ``backbone=arch``."""
    from ..recognition import MobileFaceNetTrainConfig, train_mobilefacenet

    config = MobileFaceNetTrainConfig(**options, backbone=arch)
    summary = train_mobilefacenet(config)
    from accelerate import PartialState

    if not PartialState().is_main_process:   # under `accelerate launch` every process trains; one reports
        return 0
    print(json.dumps(summary, indent=2))
    print(f"saved {config.output}/model.safetensors, config.json; evaluate with "
          f"`idgen eval verify --recognizer {config.output} ...`")
    return 0


def train_face_transformer(options: dict) -> int:
    import torch

    from ..errors import ConfigError
    from ..recognition import (FaceDataConfig, FaceRecognizer, PRESETS, TrainConfig, load_face_folder,
                               model_config, predict, train_recognizer)
    from ..recognition.distill import prepare_distillation

    o = options
    if o["preset"] not in PRESETS:
        raise ConfigError(f"unknown preset {o['preset']!r}; choose one of {sorted(PRESETS)}")
    size = o["input_size"] or PRESETS[o["preset"]]["image_size"]
    data = FaceDataConfig(root=o["data"], align=o["align"], image_size=size, min_images_per_class=o["min_images"],
                          test_fraction=o["test_fraction"], max_train=o["max_train"], cache_dir=o["cache_dir"])
    train, test = load_face_folder(data)
    extra = None
    if o["distill_from"]:
        train, extra = prepare_distillation(train, data, o["distill_from"], o["distill_images"],
                                            o["distill_max_images"], o["seed"])
    torch.manual_seed(o["seed"])
    model = FaceRecognizer(model_config(o["preset"], image_size=size, num_classes=len(train.class_names)))
    config = TrainConfig(epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"], weight_decay=o["weight_decay"],
                         seed=o["seed"], distill_from=o["distill_from"], distill_weight=o["distill_weight"])
    log = train_recognizer(model, train, config, progress=o["progress"], extra=extra)
    model.save_pretrained(o["output"], train.class_names)
    accuracy = 100.0 * float((predict(model, test) == test.labels).float().mean())
    print(f"{len(train.class_names)} identities, {len(train)} train / {len(test)} test images; "
          f"{model.num_parameters():,} parameters; {log['wall_seconds']:.0f} s; test accuracy {accuracy:.2f} %")
    print(f"saved {o['output']}/config.json, model.safetensors")
    return 0
