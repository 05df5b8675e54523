"""What every YAML-configured command shares: reading the file, applying command-line overrides and
turning the nested mapping into that command's dataclasses, strictly.

Each command (``idgen dataset``, ``training/train.py``, ``idgen forget``) keeps its own dataclass
schema; they all read files, take ``section.key=value`` overrides and check keys and types the same
way, here. A key the schema does not know is an error naming it (a typo such as ``lerning_rate``
must never silently train with the default), and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import ConfigError


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a YAML file (``{}`` for an empty file), or a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return values


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested config dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)  # "" → None
    return values


def build_dataclass(cls, values: Any, where: str = ""):
    """An instance of the dataclass ``cls`` from a nested mapping, checked strictly.

    Fields left out keep their defaults; a field whose type is a dataclass takes a mapping (``null``
    = all defaults). Numbers written as text become numbers (YAML 1.1 reads ``1e-4`` as a string),
    an int is accepted where a float belongs, and YAML's bare ``no``/``yes`` (read as booleans) are
    given back as text where text belongs. ``where`` is the dotted name of this section, for errors.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"config key {where or 'top level'} is a section; give it a mapping of keys, not {values!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        dotted = ", ".join(f"{where}.{key}" if where else key for key in unknown)
        raise ConfigError(f"unknown config key {dotted}; known keys here: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = build_dataclass(hints[key], {} if value is None else value, name)
        else:
            kwargs[key] = _checked(value, hints[key], name)
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise ConfigError(f"config {where or 'top level'} is missing required key(s) {', '.join(required)}")
    return cls(**kwargs)


def _checked(value: Any, hint: Any, name: str) -> Any:
    """``value`` for a field annotated ``hint`` (``int``, ``float | None``, ``list``, ``Any`` …)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        optional = len(options) < len(typing.get_args(hint))
    else:
        options, optional = [hint], False
    if value is None:
        if optional or hint is Any:
            return None
        raise ConfigError(f"config key {name} may not be null")
    if len(options) != 1 or options[0] is Any:
        return value
    kind = options[0]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name} must be true or false, got {value!r}")
    elif kind is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {name} must be a number, got {value!r}") from None
    elif kind is str and isinstance(value, bool):
        return "yes" if value else "no"
    elif kind in (int, str, list, dict) and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        expected = {int: "an integer", str: "text", list: "a list", dict: "a mapping"}[kind]
        raise ConfigError(f"config key {name} must be {expected}, got {value!r}")
    return value
