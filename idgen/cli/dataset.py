"""``idgen dataset generate``: make or resume a synthetic face-recognition dataset;
``idgen dataset verify``: check a finished one against its manifest."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="synthetic face-recognition datasets")
    commands = parser.add_subparsers(dest="dataset_command", metavar="DATASET_COMMAND")
    generate = commands.add_parser(
        "generate", help="generate (or resume) a dataset from a config",
        description="Sample distinct identities, generate and filter images, and write ImageFolder, "
                    "parquet and WebDataset outputs with a manifest and a dataset card. Rerun the same "
                    "command after an interruption to resume. Run it as `accelerate launch -m idgen.cli "
                    "dataset generate ...` to split identities across processes.",
    )
    generate.add_argument("--config", help="YAML config (see idgen.synth.config for every setting); relative "
                                           "paths in it are relative to the file")
    generate.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                          help="settings on top of the config (values parsed as YAML; relative paths relative "
                               "to the current directory), e.g. identities.count=1000 output=out/faces")
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
    """The :class:`~idgen.synth.SynthConfig` the parsed ``dataset generate`` command line asks for."""
    from ..synth import SynthConfig

    return SynthConfig.load(args.config, args.overrides)


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
