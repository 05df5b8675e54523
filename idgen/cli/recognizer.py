"""``idgen recognizer train --arch {mobilefacenet,iresnet,edgeface,face-transformer}``: train a face recogniser.

One command and one trainer (:func:`idgen.recognition.train`, its options
:class:`idgen.recognition.RecognizerTrainConfig` with ``backbone=arch``) for every backbone.
``--arch mobilefacenet`` trains MobileFaceNet, ``--arch iresnet`` an IResNet (``--depth 18|34|50|100``),
``--architecture edgeface`` an EdgeFace (``--variant``),
with an ArcFace, CosFace or AdaFace margin head on any face set (ImageFolder, parquet or WebDataset
shards; accelerate, several processes). ``--arch face-transformer`` trains a Face Transformer
classifier on an ``<identity>/<image>`` folder (a fixed train/test split per identity, optional
distillation), the recogniser that ``idgen forget`` edits. Every backbone writes the same folder
(``model.safetensors`` + ``config.json`` with its ``architecture``), an :mod:`idgen.faces` recogniser.

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

from .common import number

ARCHS = ("mobilefacenet", "iresnet", "edgeface", "face-transformer")
#: Options of every backbone that are not flags: ``--arch`` sets ``backbone``; the rest are the Face
#: Transformer's fitting details that a forgetting run's ``model.train`` sets.
NOT_FLAGS = ("data", "output", "backbone", "warmup_epochs", "augment", "distill_batch_size")
#: Options every backbone has; their flags are defined once, with each backbone's default in the help.
COMMON = ("epochs", "batch_size", "lr", "weight_decay", "seed", "align", "input_size", "cache_dir", "progress")

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
    "variant": "the published EdgeFace network (gamma: the low-rank ratio of its linear layers)",
    "embedding_size": "embedding size",
    "input_size": "crop side in pixels (a multiple of 16)",
    "warmup": "fraction of the steps with a linear learning-rate warm-up (then cosine decay)",
    "preset": "model size: paper, cpu-small, cpu-tiny",
    "min_images": "skip identities with fewer images",
    "test_fraction": "share of each identity's images held out as its test images",
    "max_train": "at most this many training images per identity",
    "distill_from": "also match a pretrained recogniser's embeddings: mobilefacenet:PATH or an ONNX path",
    "distill_weight": "weight of 1 − cos(student, teacher)",
    "distill_images": "extra <identity>/<image> photos to distil on; identities that are classes are skipped",
    "distill_max_images": "how many extra photos (a seeded draw)",
}
CHOICES = {"format": ["auto", "imagefolder", "parquet", "webdataset"], "align": ["dlib", "box"],
           "head": ["arcface", "cosface", "adaface"], "depth": [18, 34, 50, 100]}
#: Types of options whose default is None.
TYPES = {"margin": float, "max_train": int, "distill_from": str, "distill_images": str}
METAVARS = {"distill_from": "TEACHER", "distill_images": "FOLDER"}
#: Backbone-only flags that other commands have too: they keep the one default every command gives them
#: (a backbone without the option takes only that value).
SHARED_DEFAULTS = {"upsample": 0}


def _typed(name: str, kind: type):
    """The argparse ``type`` of the flag of the trainer option ``name``: a ``kind``, in the range the
    option's field declares (:class:`~idgen.recognition.RecognizerTrainConfig`), when it has one."""
    from ..config import declared_range
    from ..recognition.trainer import RecognizerTrainConfig

    allowed = declared_range(RecognizerTrainConfig, name)
    return number(kind, allowed) if allowed is not None else kind


def defaults(arch: str) -> dict:
    """Every flag of ``arch`` with its default (``data`` and ``output`` are required): the trainer's."""
    from ..recognition.trainer import DEFAULTS, RecognizerTrainConfig

    common = {f.name: f.default for f in fields(RecognizerTrainConfig) if f.name in COMMON}
    own = {name: value for name, value in DEFAULTS[arch].items() if name not in NOT_FLAGS}
    return {**common, **own}


def _own(arch: str) -> list[str]:
    """The flags only ``arch`` (and maybe other backbones) has, in the config's order."""
    from ..recognition.trainer import DEFAULTS, RecognizerTrainConfig

    return [f.name for f in fields(RecognizerTrainConfig) if f.name in DEFAULTS[arch] and f.name not in COMMON
            and f.name not in NOT_FLAGS]


# --- idgen recognizer train -----------------------------------------------------------------------

def register(subparsers) -> None:
    parser = subparsers.add_parser("recognizer", help="train face recognisers (MobileFaceNet, IResNet, EdgeFace, Face Transformer)")
    commands = parser.add_subparsers(dest="recognizer_command", metavar="RECOGNIZER_COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a recogniser: MobileFaceNet, IResNet, EdgeFace or a Face Transformer (--arch)",
        description="--arch mobilefacenet / --arch iresnet (--depth 18|34|50|100): MobileFaceNet or insightface's "
                    "IResNet with an ArcFace, CosFace or AdaFace margin head on a face set "
                    "(ImageFolder, parquet or WebDataset shards, e.g. the output of `idgen dataset generate`); the "
                    "folder it writes (model.safetensors + config.json) is a recogniser for `idgen eval verify "
                    "--recognizer <output>`; several GPUs: `accelerate launch -m idgen.cli recognizer train ...`. "
                    "--architecture edgeface (--variant xs_gamma_06|s_gamma_05|xxs|base): EdgeFace, the same way. "
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
    both.add_argument("--epochs", type=_typed("epochs", int), default=s, help="epochs (default: 10 / 30)")
    both.add_argument("--batch-size", type=_typed("batch_size", int), default=64, help="images per step (default: 64)")
    both.add_argument("--lr", type=_typed("lr", float), default=s, help="peak learning rate (default: 0.1 SGD / 1e-3 AdamW)")
    both.add_argument("--weight-decay", type=_typed("weight_decay", float), default=s,
                      help="weight decay (default: 5e-4 / 0.05)")
    both.add_argument("--seed", type=_typed("seed", int), default=0, help="random seed (default: 0)")
    both.add_argument("--align", choices=["dlib", "box", "resize"], default="dlib",
                      help="dlib: detect landmarks and align (default); box (mobilefacenet, iresnet): the faces are already "
                           "aligned, template in a centred box; resize (face-transformer): the faces are already "
                           "cropped, resized")
    both.add_argument("--input-size", type=_typed("input_size", int), default=s,
                      help="crop side in pixels (default: 112 / the preset's; mobilefacenet, iresnet: a multiple of 16)")
    both.add_argument("--cache-dir", default=".cache/faces", help="aligned crops are cached here (default: .cache/faces)")
    both.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    mobile = train.add_argument_group("--arch mobilefacenet, --arch iresnet and --architecture edgeface (but --width)")
    for name in _own("mobilefacenet"):
        _add_option(mobile, name, SHARED_DEFAULTS.get(name, s), iresnet=True)
    iresnet = train.add_argument_group("--arch iresnet only")
    for name in sorted(set(_own("iresnet")) - set(_own("mobilefacenet"))):
        _add_option(iresnet, name, s, iresnet=True)
    from ..models import EDGEFACE_VARIANTS

    edgeface = train.add_argument_group("--architecture edgeface only")
    _add(edgeface, "variant", s, HELP["variant"], defaults("edgeface")["variant"], choices=list(EDGEFACE_VARIANTS))
    transformer = train.add_argument_group("--arch face-transformer only")
    for name in _own("face-transformer"):
        _add_option(transformer, name, s, arch="face-transformer")
    train.set_defaults(handler=run, route="recognizer train")
    _register_aliases(subparsers)


def _add(group, name: str, default, text: str, shown, **extra) -> None:
    """``--name-with-dashes`` for the option ``name``; ``shown`` is the default the help names."""
    group.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"{text} (default: {shown})", **extra)


def _add_option(group, name: str, default, arch: str = "mobilefacenet", iresnet: bool = False) -> None:
    """The flag of the trainer option ``name`` of ``arch``; its help names ``arch``'s default, and IResNet's
    where that differs and ``iresnet``."""
    own, ir = defaults(arch), defaults("iresnet")
    shown = own.get(name, ir.get(name))
    kind = TYPES.get(name, type(shown))
    if iresnet and name in own and ir[name] != shown:
        shown = f"{shown}; iresnet: {ir[name]}"
    _add(group, name, default, HELP.get(name, name.replace("_", " ")), shown, type=_typed(name, kind), choices=CHOICES.get(name),
         **({"metavar": METAVARS[name]} if name in METAVARS else {}))


# --- the old names ------------------------------------------------------------------------------

#: What each old command prints before running (on stderr).
NOTES = {
    "fr train": "`idgen fr train` is an old name of `idgen recognizer train --arch mobilefacenet` (same flags); "
                "it still works",
    "train-recognizer": "`idgen train-recognizer FOLDER` is an old name of `idgen recognizer train --arch "
                        "face-transformer --data FOLDER` (--image-size is --input-size); it still works",
}


def _register_aliases(subparsers) -> None:
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
    for name, value in defaults("mobilefacenet").items():
        if name != "progress":
            _add_option(train, name, value)
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
    old.add_argument("--image-size", type=_typed("input_size", int), default=None, help="crop size (default: the preset's)")
    old.add_argument("--align", default="dlib", choices=["dlib", "resize"],
                     help="dlib: detect and align; resize: faces are already cropped")
    old.add_argument("--epochs", type=_typed("epochs", int), default=30)
    old.add_argument("--batch-size", type=_typed("batch_size", int), default=64)
    old.add_argument("--lr", type=_typed("lr", float), default=1e-3)
    old.add_argument("--cache-dir", default=".cache/faces", help="aligned-crop cache")
    old.add_argument("--seed", type=_typed("seed", int), default=0)
    for name in _own("face-transformer"):
        _add_option(old, name, defaults("face-transformer")[name], arch="face-transformer")
    old.set_defaults(handler=run, route="train-recognizer")


# --- one request, whichever name it came by --------------------------------------------------------

def train_options(args) -> tuple[str, dict]:
    """``(arch, options)`` of a parsed ``recognizer train`` / ``fr train`` / ``train-recognizer``: every
    option of that backbone, defaults filled in; the same request gives the same pair by every name."""
    from ..errors import ConfigError
    from ..recognition.trainer import ALIGNMENTS

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
    from accelerate import PartialState

    from ..recognition import RecognizerTrainConfig, train

    config = RecognizerTrainConfig(**options, backbone=arch)
    summary = train(config)
    if not PartialState().is_main_process:   # under `accelerate launch` every process trains; one reports
        return 0
    if arch == "face-transformer":
        print(f"{summary['identities']} identities, {summary['images']} train / {summary['test_images']} test images; "
              f"{summary['parameters']:,} parameters; {summary['wall_seconds']:.0f} s; "
              f"test accuracy {summary['test_accuracy']:.2f} %")
    else:
        print(json.dumps(summary, indent=2))
    print(f"saved {config.output}/model.safetensors, config.json; evaluate with "
          f"`idgen eval verify --recognizer {config.output} ...`")
    return 0
