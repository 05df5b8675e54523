"""mkdocs hooks: the reference pages are filled from the code at build time, so they cannot drift.

- ``reference/cli.md``: ``<!-- cli-reference -->`` becomes the ``--help`` of ``idgen``, of every
  subcommand (from :func:`idgen.cli.build_parser`, which imports no gradio) and of ``python app.py``.
- ``reference/config.md``: each ``<!-- config-reference: module:Class -->`` becomes one table per
  section of that config dataclass: every key, its type, its default, the values it allows (the
  :class:`idgen.config.Range` the loader checks) and the comment beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
import tokenize
import typing
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_uri == "reference/cli.md":
        return markdown.replace("<!-- cli-reference -->", cli_reference())
    if page.file.src_uri == "reference/config.md":
        return re.sub(r"<!-- config-reference: (\S+) -->", lambda m: config_reference(m.group(1)), markdown)
    return markdown


# --- command line -------------------------------------------------------------------------------

@contextmanager
def _plain_environment():
    """Built-in defaults in the help (no ``IDGEN_*`` overrides), a fixed width, no colour."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("IDGEN_")]:
        del os.environ[name]
    os.environ.update(COLUMNS="100", NO_COLOR="1")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _commands(parser: argparse.ArgumentParser):
    """``parser`` and every subcommand under it, depth first, in ``--help`` order."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):   # aliases share one parser
                yield from _commands(sub)


def cli_reference() -> str:
    from idgen.cli import build_parser

    with _plain_environment():
        spec = importlib.util.spec_from_file_location("idgen_docs_app", ROOT / "app.py")
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        demo = app.build_parser()
        demo.prog = "python app.py"
        parsers = [*_commands(build_parser()), demo]
        pages = [f"### `{p.prog}`\n\n```text\n{p.format_help().rstrip()}\n```\n" for p in parsers]
    return "\n".join(pages)


# --- configuration files ------------------------------------------------------------------------

def _field_comments(cls) -> dict[str, str]:
    """The comment of each field, a subclass's over its base's: ``#`` lines right above it and the
    ``#`` comment on its line."""
    comments = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        comments.update({name: text for name, text in _own_field_comments(klass).items() if text})
    return comments


def _own_field_comments(cls) -> dict[str, str]:
    """The comments of the fields ``cls``'s own source defines."""
    lines, _ = inspect.getsourcelines(cls)
    trailing = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(iter(lines).__next__)
                if tok.type == tokenize.COMMENT}
    comments, above = {}, []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#:").strip())
            continue
        match = re.match(r"\s+(\w+)\s*:", line)
        if match and number in trailing:
            above.append(trailing[number].lstrip("#:").strip())
        if match:
            comments[match.group(1)] = " ".join(above)
        above = []
    return comments


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, ``<`` outside code spans shown rather than read as HTML."""
    parts = re.split(r"(`+[^`]+`+)", text.replace("\n", " "))
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;") for p in parts).replace("|", "\\|")


def _sections(cls, prefix: str = "", rules: dict | None = None):
    """``(key path, dataclass, path rules its parent gives its keys)`` for ``cls`` and every
    dataclass-typed field under it."""
    from idgen.config import path_rule

    yield prefix, cls, rules or {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            sub = path_rule(field)
            yield from _sections(hints[field.name], f"{prefix}{field.name}.", sub if isinstance(sub, dict) else None)


def _allowed(field: dataclasses.Field) -> str:
    """The range of a numeric key, or of each numeric key of a free mapping; empty for other keys."""
    from idgen.config import value_range

    allowed = value_range(field)
    if isinstance(allowed, dict):
        return "; ".join(f"`{key}`: {limits.describe()}" for key, (_, limits) in allowed.items())
    return allowed.describe() if allowed is not None else ""


def config_reference(target: str) -> str:
    from idgen.config import path_rule

    module, name = target.split(":")
    root = getattr(importlib.import_module(module), name)
    out = []
    for prefix, cls, rules in _sections(root):
        hints, comments = typing.get_type_hints(cls), _field_comments(cls)
        title = f"`{prefix.rstrip('.')}`" if prefix else cls.__name__
        out.append(f"### {title}\n\n`{cls.__module__}.{cls.__qualname__}`\n")
        doc = cls.__doc__ or ""
        if doc and not doc.startswith(f"{cls.__name__}("):   # dataclass's generated signature
            out.append(inspect.cleandoc(doc) + "\n")
        out.append("| key | type | default | allowed | description |\n|---|---|---|---|---|")
        for field in dataclasses.fields(cls):
            allowed = _allowed(field)
            if dataclasses.is_dataclass(hints[field.name]):
                default, kind = f"section `{prefix}{field.name}`", hints[field.name].__name__
            else:
                value = _default(field)
                default = "required" if value is dataclasses.MISSING else f"`{json.dumps(value, ensure_ascii=False, default=str)}`"
                kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
                rule = rules.get(field.name) or path_rule(field)
                if rule is not None and not isinstance(rule, dict):
                    kind += " (hub id, name or path)" if rule.if_exists else " (path)"
            out.append(f"| `{prefix}{field.name}` | {_cell(kind)} | {default} | {_cell(allowed)} | "
                       f"{_cell(comments.get(field.name, ''))} |")
        out.append("")
    return "\n".join(out)
