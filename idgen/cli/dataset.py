"""``idgen dataset generate``: make or resume a synthetic face-recognition dataset;
``idgen dataset verify``: check a finished one against its manifest."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="synthetic face-recognition datasets")
    commands = parser.add_subparsers(dest="dataset_command", metavar="DATASET_COMMAND")
    generate = commands.add_parser(
        "generate", help="generate (or resume) a dataset from a config",
        description="Sample distinct identities, generate and filter images, and write ImageFolder, "
                    "parquet and WebDataset outputs with a manifest and a dataset card. Rerun the same "
                    "command after an interruption to resume. Run under `accelerate launch -m idgen.cli "
                    "dataset generate` to split identities across processes.",
        epilog="Which generator runs: generator.type when the config or an override names it; else the "
               "published Arc2Face (FoivosPar/Arc2Face on SD 1.5) when its weights are downloaded (or the "
               "copies $IDGEN_ARC2FACE and $IDGEN_BASE name, or the saved pipeline $IDGEN_MODEL names), else "
               "the embedded mini model (64x64 faces, offline, ships with idgen; $IDGEN_MODEL=mini forces it). The command prints which, and why, first. Settings left "
               "unset (identities.dim, filter.recognizer, filter.threshold) take that generator's defaults. "
               "`idgen doctor` lists the models on this machine and the command that downloads each missing one.",
    )
    generate.add_argument("--config", help="YAML config (see idgen.synth.config for every setting); relative "
                                           "paths in it are relative to the file")
    generate.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                          help="settings on top of the config (values parsed as YAML; relative paths relative "
                               "to the current directory), e.g. identities.count=1000 output_dir=out/faces")
    generate.set_defaults(handler=run_generate)
    verify = commands.add_parser(
        "verify", help="check a finished dataset: counts, checksums, shards, manifest against files",
        description="Check a dataset folder made by `idgen dataset generate` (on one process or many machines): "
                    "the image counts, every image's sha256 against the manifest, no image missing or unlisted, "
                    "and every parquet and WebDataset shard present and holding the manifest's images. Prints "
                    "a summary; exits non-zero listing every problem, each naming its file.",
    )
    verify.add_argument("path", help="the dataset's output folder")
    verify.set_defaults(handler=run_verify)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def load(args):
    """The :class:`~idgen.synth.SynthConfig` the parsed ``dataset generate`` command line asks for.
    When neither the config nor the overrides name ``generator.type``, the generator is chosen as for
    ``idgen generate`` (:func:`~idgen.application.hub.dataset_generator`) and a line on stderr
    says which and why."""
    from ..application.hub import ModelSettings, dataset_generator
    from ..config import load_settings
    from ..synth import SynthConfig

    overrides = list(args.overrides)
    generator = load_settings(SynthConfig, args.config, overrides).get("generator")
    if isinstance(generator, dict) and "type" in generator:
        return SynthConfig.load(args.config, overrides)
    spec, why = dataset_generator(ModelSettings.from_environment(tiny=False))
    config = SynthConfig.load(args.config, [f"generator.{key}={value}" for key, value in spec.items()] + overrides)
    print(f"generator: {why}; set generator.type to choose (`idgen doctor` lists the models on this machine)",
          file=sys.stderr)
    return config


def run_generate(args) -> int:
    from ..synth import generate_dataset

    config = load(args)
    stats = generate_dataset(config)
    if stats is not None:
        print(json.dumps(stats, indent=2))
    return 0


def run_verify(args) -> int:
    from ..synth.verify import verify_dataset

    print(json.dumps(verify_dataset(args.path), indent=2))
    return 0
