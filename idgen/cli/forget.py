"""``idgen forget``: make a face recogniser forget identities with GS-LoRA (a YAML-configured run).

Overrides are positional ``section.key=value`` arguments, as for every YAML-configured command.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "forget", help="forget identities in a face recogniser (GS-LoRA / GS-LoRA++)",
        description="Run the forgetting tasks of a YAML config (see training/configs/forget_*.yaml) with "
                    "GS-LoRA and the configured baselines; writes the edited model (safetensors), "
                    "report.json, report.md and groups.png to the config's output_dir. Killed, the same "
                    "command resumes: finished runs are kept in output_dir/journal until the report is written. "
                    "Relative paths in the config are relative to the config file; in overrides and "
                    "--output-dir, to the current directory.",
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--output-dir", help="override the config's output_dir (the same as output_dir=PATH)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="settings on top of the config (values parsed as YAML), e.g. tasks.seed=1 "
                             "'baselines.methods=[finetune]'")
    parser.set_defaults(handler=run)


def load(args):
    """The :class:`~idgen.unlearn.RunConfig` the parsed command line asks for."""
    from ..config import resolve_path
    from ..unlearn import RunConfig

    config = RunConfig.load(args.config, args.overrides)
    if args.output_dir:
        config.output_dir = resolve_path(args.output_dir)
    return config


def run(args) -> int:
    from ..unlearn import run_forgetting
    from ..unlearn.report import markdown_report

    config = load(args)
    report = run_forgetting(config)
    print(markdown_report(report))
    print(f"wrote {config.output_dir}/report.md, report.json, groups.png" + (", model/" if config.save_model else ""))
    return 0
