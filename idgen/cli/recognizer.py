"""``idgen recognizer train --architecture {mobilefacenet,iresnet,face-transformer}``: train a face recogniser.

One command and one trainer (:func:`idgen.recognition.train`) for every architecture; the flags are the
fields of that architecture's recipe (:data:`idgen.recognition.trainer.RECIPES`), spelled
``--kebab-case``. ``--architecture mobilefacenet`` trains MobileFaceNet, ``--architecture iresnet`` an
IResNet (``--depth 18|34|50|100``), with an ArcFace, CosFace or AdaFace margin head on any face set
(ImageFolder, parquet or WebDataset shards; accelerate, several processes). ``--architecture
face-transformer`` trains a Face Transformer classifier on an ``<identity>/<image>`` folder (a fixed
train/test split per identity, optional distillation), the recogniser that ``idgen forget`` edits.
Every architecture writes the same folder (``model.safetensors`` + ``config.json`` with its
``architecture``), an :mod:`idgen.faces` recogniser.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields

from .common import number

#: Recipe fields that are not flags: the ones a forgetting run's ``model.train`` sets for its base model.
NOT_FLAGS = ("warmup_epochs", "augment", "distill_batch_size")
#: Flags other commands have too, holding those commands' default when not given (so that each flag
#: name has one default in every command); given as this value, the recipe's own default applies, and
#: an architecture without the option is not refused.
SHARED_DEFAULTS = {"upsample": 0, "fallback_box": None}
#: Options every run must be given (the recipes leave them unset so that code can fill them in later).
REQUIRED = ("data", "output_dir")
#: Flags whose help text is not their field's comment.
HELP = {
    "data": "mobilefacenet, iresnet: ImageFolder, parquet file/folder, or WebDataset .tar/folder; "
            "face-transformer: a face folder, one sub-folder per identity",
    "output_dir": "folder for model.safetensors and config.json",
    "align": "dlib: detect landmarks and align; box (mobilefacenet, iresnet): the faces are already aligned, "
             "template in a centred box; resize (face-transformer): the faces are already cropped, resized",
    "format": "face-set format; auto decides by the files (a synth output folder -> its images/)",
    "fallback_box": "centred box, as a fraction of the shorter side, for --align box and where dlib finds no face",
    "upsample": "dlib detector upsampling; use the same with `idgen eval verify --upsample`",
    "cache_dir": "aligned crops are cached here",
    "progress": "progress bars",
    "head": "margin head (adaface: the margin adapts to each image's feature norm)",
    "margin": "margin; default: 0.5 for ArcFace, 0.35 for CosFace, 0.4 for AdaFace",
    "scale": "logit scale s of the margin head",
    "width": "channel multiplier",
    "depth": "IResNet depth (IR-18, IR-34, IR-50, IR-100)",
    "resolution": "crop side in pixels (mobilefacenet, iresnet: a multiple of 16; face-transformer: the preset's)",
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
CHOICES = {"format": ["auto", "imagefolder", "parquet", "webdataset"], "align": ["dlib", "box", "resize"],
           "head": ["arcface", "cosface", "adaface"], "depth": [18, 34, 50, 100], "preset": ["paper", "cpu-small", "cpu-tiny"]}
#: Types of options whose default is None.
TYPES = {"margin": float, "max_train": int, "distill_from": str, "distill_images": str, "resolution": int,
         "data": str, "output_dir": str, "cache_dir": str}
METAVARS = {"distill_from": "TEACHER", "distill_images": "FOLDER"}


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _options(recipe) -> list:
    """The fields of ``recipe`` that are flags, in its order."""
    return [f for f in fields(recipe) if f.name not in NOT_FLAGS]


def _groups() -> list[tuple[str, list]]:
    """``(title, fields)``: the options every architecture has, then each architecture's own, each once."""
    from ..recognition.trainer import RECIPES, RecognizerTrainConfig

    seen = {f.name for f in fields(RecognizerTrainConfig)}
    groups = [("every architecture", _options(RecognizerTrainConfig))]
    for name, recipe in RECIPES.items():
        own = [f for f in _options(recipe) if f.name not in seen]
        seen.update(f.name for f in own)
        if own:
            groups.append((f"--architecture {name}" + (" (and iresnet)" if name == "mobilefacenet" else ""), own))
    return groups


def _defaults(name: str) -> str:
    """The default of option ``name`` in every architecture that has it, for its help."""
    from ..recognition.trainer import RECIPES

    shown = {}
    for arch, recipe in RECIPES.items():
        for f in fields(recipe):
            if f.name == name and f.default is not MISSING:
                shown.setdefault(f.default, []).append(arch)
    if len(shown) == 1:
        return str(next(iter(shown)))
    return "; ".join(f"{', '.join(archs)}: {value}" for value, archs in shown.items())


def _parser_default(field):
    """What the parser holds when the flag is not given: the default, where every architecture shares
    it (another command's flag of the same name has it too) or the option is one other commands share
    (:data:`SHARED_DEFAULTS`); else nothing, so that the recipe's own default applies."""
    from ..recognition.trainer import RecognizerTrainConfig

    if field.name in SHARED_DEFAULTS:
        return SHARED_DEFAULTS[field.name]
    if _defaults(field.name) == str(field.default) and field.name in {f.name for f in fields(RecognizerTrainConfig)}:
        return field.default
    return argparse.SUPPRESS


def _add_option(group, field) -> None:
    """The flag of the recipe field ``field``: typed and range-checked as the field declares."""
    from ..config import value_range

    help_text = HELP.get(field.name, field.name.replace("_", " "))
    if field.type in (bool, "bool"):
        group.add_argument(_flag(f"no_{field.name}"), dest=field.name, action="store_false",
                           default=_parser_default(field), help=f"no {help_text}")
        return
    kind = TYPES.get(field.name, type(field.default))
    allowed = value_range(field)
    required = field.name in REQUIRED
    group.add_argument(_flag(field.name), default=_parser_default(field), choices=CHOICES.get(field.name),
                       required=required, type=number(kind, allowed) if allowed is not None else kind,
                       help=help_text if required else f"{help_text} (default: {_defaults(field.name)})",
                       **({"metavar": METAVARS[field.name]} if field.name in METAVARS else {}))


def register(subparsers) -> None:
    from ..recognition.trainer import ARCHITECTURES

    parser = subparsers.add_parser("recognizer", help="train face recognisers (MobileFaceNet, IResNet, Face Transformer)")
    commands = parser.add_subparsers(dest="recognizer_command", metavar="RECOGNIZER_COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a recogniser: MobileFaceNet, IResNet or a Face Transformer (--architecture)",
        description="--architecture mobilefacenet / --architecture iresnet (--depth 18|34|50|100): MobileFaceNet or "
                    "insightface's IResNet with an ArcFace, CosFace or AdaFace margin head on a face set "
                    "(ImageFolder, parquet or WebDataset shards, e.g. the output of `idgen dataset generate`); the "
                    "folder it writes (model.safetensors + config.json) is a recogniser for `idgen eval verify "
                    "--recognizer <output-dir>`; several GPUs: `accelerate launch -m idgen.cli recognizer train ...`. "
                    "--architecture face-transformer: a Face Transformer classifier on an <identity>/<image> folder: "
                    "the faces are aligned (dlib; cached), every identity is split into train/test images, the model "
                    "is trained (optionally distilling a pretrained recogniser, --distill-from) and saved "
                    "(config.json + model.safetensors), the recogniser `idgen forget` edits. "
                    "Options of another architecture are refused.",
    )
    train.add_argument("--architecture", required=True, choices=ARCHITECTURES, help="which recogniser to train")
    for title, options in _groups():
        group = train.add_argument_group(title)
        for field in options:
            _add_option(group, field)
    train.set_defaults(handler=run)


def train_config(args):
    """The recipe of ``args.architecture`` with the flags given (the rest keep the recipe's defaults);
    a flag of another architecture is refused by name."""
    from ..errors import ConfigError
    from ..recognition.trainer import RECIPES

    recipe = RECIPES[args.architecture]
    own = {f.name for f in _options(recipe)}
    given = {name: value for name, value in vars(args).items()
             if name not in ("architecture", "handler", "command", "recognizer_command")
             and not (name in SHARED_DEFAULTS and value == SHARED_DEFAULTS[name])}
    other = sorted(set(given) - own)
    if other:
        raise ConfigError(f"{', '.join(map(_flag, other))}: not an option of --architecture {args.architecture} "
                          "(see `idgen recognizer train --help`)")
    return recipe(**given)


def run(args) -> int:
    config = train_config(args)
    from accelerate import PartialState

    from ..recognition import train

    summary = train(config)
    if not PartialState().is_main_process:   # under `accelerate launch` every process trains; one reports
        return 0
    if config.architecture == "face-transformer":
        print(f"{summary['identities']} identities, {summary['images']} train / {summary['test_images']} test images; "
              f"{summary['parameters']:,} parameters; {summary['wall_seconds']:.0f} s; "
              f"test accuracy {summary['test_accuracy']:.2f} %")
    else:
        print(json.dumps(summary, indent=2))
    print(f"saved {config.output_dir}/model.safetensors, config.json; evaluate with "
          f"`idgen eval verify --recognizer {config.output_dir} ...`")
    return 0
