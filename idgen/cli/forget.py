"""``idgen forget``: make a face recogniser forget identities with GS-LoRA (a YAML-configured run)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "forget", help="forget identities in a face recogniser (GS-LoRA / GS-LoRA++)",
        description="Run the forgetting tasks of a YAML config (see training/configs/forget_*.yaml) with "
                    "GS-LoRA and the configured baselines; writes the edited model (safetensors), "
                    "report.json, report.md and groups.png to the config's output_dir. Killed, the same "
                    "command resumes: finished runs are kept in output_dir/journal until the report is written.",
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set tasks.seed=1 (repeatable)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..unlearn import load_config, run_forgetting
    from ..unlearn.report import markdown_report

    config = load_config(args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    report = run_forgetting(config)
    print(markdown_report(report))
    print(f"wrote {config.output_dir}/report.md, report.json, groups.png" + (", model/" if config.save_model else ""))
    return 0
