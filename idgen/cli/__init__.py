"""The ``idgen`` command line.

Each subcommand lives in its own module under ``idgen.cli`` and exposes ``register(subparsers)``;
adding a command means adding its module name to :data:`COMMANDS`. Failures print one line
(``idgen: error: ...``; an operating-system error as ``<path>: <reason>; <fix>``) and exit
non-zero; ``IDGEN_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import IdgenError
from ..io import os_error_message

#: Subcommand modules, in the order ``idgen --help`` lists them.
COMMANDS = [
    "idgen.cli.embed",
    "idgen.cli.evaluate",
    "idgen.cli.edit",
    "idgen.cli.recognizer",
    "idgen.cli.forget",
    "idgen.cli.dataset",
    "idgen.cli.generate",
    "idgen.cli.doctor",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idgen", description="Identity-preserving face synthesis and analysis.")
    parser.add_argument("--version", action="version", version=f"idgen {__import__('idgen').__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (IdgenError, ValueError, OSError) as exc:
        if os.environ.get("IDGEN_DEBUG"):
            raise
        message = os_error_message(exc) if isinstance(exc, OSError) and not isinstance(exc, IdgenError) else exc
        print(f"idgen: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("idgen: interrupted", file=sys.stderr)
        return 130
