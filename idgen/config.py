"""What every YAML-configured command shares: reading the file, resolving its paths, applying
command-line overrides and turning the nested mapping into that command's dataclasses, strictly.

Each command (``training/train.py``, its ``task: forget`` route, ``idgen forget``, ``idgen dataset
generate``) keeps its own dataclass schema and loads it with :func:`load_settings` then
:func:`build_dataclass`, so they all read files, take overrides and check keys and types the same way:

- **One override syntax.** Overrides are positional ``section.key=value`` arguments after the
  options; values are parsed as YAML (``'data.exclude_people=[a.txt,b.txt]'`` is a list, ``1e-4``
  a number, ``null`` none), and a whole section may be given as a mapping (``'lora={rank: 4}'``).
- **One path rule.** A relative path written *in a config file* is relative to the folder of that
  file, so a config means the same thing from any current directory; a relative path given *as an
  override* is relative to the current directory (where it was typed). Both are made absolute when
  the config is loaded; absolute paths (and ``~``, expanded) are kept as they are, and defaults that
  no file or override sets are left as written in the schema (relative to the current directory).
- **Which keys are paths** is marked in the schema, with :func:`path_field`: :data:`PATH` for a file
  or folder (or a list of them), always resolved; :data:`MODEL` for a key that takes a hub id or a
  name as well as a folder or file (``model.pretrained: runwayml/stable-diffusion-v1-5``,
  ``tokenizer: openai/clip-vit-large-patch14``, ``recognizer: dlib``), resolved only when that path
  exists relative to the config file (or, for an override, the current directory), and otherwise
  left untouched. Either may allow a ``name:`` prefix in front of the path (``mobilefacenet:PATH``).
  A section whose class is defined elsewhere, or a free mapping such as the dataset ``generator``,
  marks its keys with a mapping of key → rule. Every other key (numbers, names, prompts) is never
  touched.

A key the schema does not know is an error naming it (a typo such as ``lerning_rate`` must never
silently train with the default), and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import yaml

from .errors import ConfigError


class PathRule(NamedTuple):
    """How a config key holding a path is resolved (see the module docstring)."""

    #: ``True``: the value may also be a hub id or a name, so it is resolved only when the path exists.
    if_exists: bool = False
    #: the value may start with ``name:`` (two or more characters, so ``C:`` stays a path); the rest is the path.
    prefixed: bool = False


#: A file or folder (or a list of them): a relative one is always resolved.
PATH = PathRule()
#: A hub id, a name or a path: resolved only when the relative path exists.
MODEL = PathRule(if_exists=True)
#: The same after an optional ``name:`` prefix: a recogniser setting (``dlib``, a file in an
#: insightface pack, an ONNX file, a trained folder or ``mobilefacenet:PATH``).
MODEL_SPEC = PathRule(if_exists=True, prefixed=True)

_PATH_RULE = "idgen.config.path"
_PREFIX = re.compile(r"([A-Za-z][\w.+-]+:)(?!//)(.+)")


def path_field(default: Any = dataclasses.MISSING, rule: PathRule | dict = PATH, *,
               default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value is a path, resolved by the module's path rule.

    ``rule`` is :data:`PATH`, :data:`MODEL` or a :class:`PathRule`; for a section or a free mapping,
    a ``{key: rule}`` mapping for the keys inside it (added to any the section's own class marks).
    """
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_PATH_RULE: rule})


def path_rule(field: dataclasses.Field) -> PathRule | dict | None:
    """The path rule :func:`path_field` gave a field, or ``None`` for a key that holds no path."""
    return field.metadata.get(_PATH_RULE)


def resolve_path(value: Any, base: str | os.PathLike | None = None, rule: PathRule = PATH) -> Any:
    """``value`` (a path, a list of them, or anything else, returned unchanged) with a relative path
    made absolute against ``base`` (default: the current directory), following ``rule``."""
    if isinstance(value, list):
        return [resolve_path(item, base, rule) for item in value]
    if not isinstance(value, str) or not value:
        return value
    prefix, text = "", value
    match = _PREFIX.fullmatch(value) if rule.prefixed else None
    if match:
        prefix, text = match.groups()
    path = Path(os.path.expanduser(text))
    if path.is_absolute():
        return prefix + str(path)
    full = Path(base if base is not None else os.getcwd()) / path
    if rule.if_exists and not full.exists():
        return value
    return prefix + str(full.resolve())


def _rules(cls, extra: dict | None) -> dict:
    """The path rules of the keys of a section: its class's fields' and the ones its parent gives."""
    rules = {}
    if cls is not None:
        rules = {f.name: path_rule(f) for f in dataclasses.fields(cls) if path_rule(f) is not None}
    rules.update(extra or {})
    return rules


def _subsection(cls, extra: dict | None, key: str):
    """``(class, extra rules)`` of the section ``key`` of a section, or ``None`` when it is no section."""
    rule = _rules(cls, extra).get(key)
    hint = typing.get_type_hints(cls).get(key) if cls is not None else None
    sub = hint if hint is not None and dataclasses.is_dataclass(hint) else None
    if sub is None and not isinstance(rule, dict):
        return None
    return sub, rule if isinstance(rule, dict) else None


def _resolve_section(values: dict, cls, extra: dict | None, base) -> None:
    rules = _rules(cls, extra)
    for key, value in values.items():
        section = _subsection(cls, extra, key)
        if section is not None and isinstance(value, dict):
            _resolve_section(value, *section, base)
        elif isinstance(rules.get(key), PathRule):
            values[key] = resolve_path(value, base, rules[key])


def resolve_paths(values: dict, schema, base: str | os.PathLike | None = None) -> dict:
    """Resolve, in place, the relative paths of a nested config mapping for the dataclass ``schema``
    against ``base`` (default: the current directory); keys that are no paths are left alone."""
    _resolve_section(values, schema, None, base)
    return values


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


def apply_overrides(values: dict, overrides: Sequence[str], schema=None, base: str | os.PathLike | None = None) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested config dict, in place.

    With ``schema`` (the command's dataclass), a relative path in an override is resolved against
    ``base`` (default: the current directory, where the command was typed)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = values
        *parents, leaf = key.strip().split(".")
        section = (schema, None) if schema is not None else None
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            section = _subsection(*section, part) if section is not None else None
        value = {leaf: yaml.safe_load(raw)}  # "" → None
        if section is not None:
            _resolve_section(value, *section, base)
        node.update(value)
    return values


def load_settings(schema, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> dict:
    """The nested settings a YAML command builds its ``schema`` dataclass from: the file's (if any),
    its relative paths resolved against its folder, with the ``section.key=value`` overrides applied
    on top, theirs resolved against the current directory."""
    values = {}
    if path is not None:
        values = read_yaml_mapping(path)
        resolve_paths(values, schema, Path(path).parent)
    return apply_overrides(values, list(overrides), schema)


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
