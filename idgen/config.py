"""What every YAML-configured command shares: reading the file, resolving its paths, applying
command-line overrides and turning the nested mapping into that command's dataclasses, strictly.

Each command (``training/train.py``, ``idgen forget``, ``idgen dataset generate``) keeps its own
dataclass schema, a :class:`YamlConfig`, and loads it the one way, ``Schema.load(path, overrides)``
(:func:`load_settings` then :func:`build_dataclass`), so they all read files, take overrides and
check keys and types the same way:

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
silently train with the default), and so is a value of the wrong type or out of its range:

- **One range declaration per number.** A numeric key is declared with :func:`ranged` (a free
  mapping's numeric keys with :func:`path_field`'s ``ranges``) and its :class:`Range` is what the
  loader checks, what the command-line flags of the same setting check and what the configuration
  reference shows. Caps that keep memory bounded (counts, image sides, batch sizes, dimensions) say
  why beside the field or the shared range.
- **Errors name where the value came from**: the override that set the key, else the file
  (:func:`config_source`), and a file or an override that is not YAML gives one line naming it
  and the line and column.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import re
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

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
_RANGE = "idgen.config.range"
_PREFIX = re.compile(r"([A-Za-z][\w.+-]+:)(?!//)(.+)")


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


class Range(NamedTuple):
    """The values a numeric config key or command-line flag allows (each bound optional). Declared
    once per setting (:func:`ranged`), it is checked by the loader and the flag parsers and shown by
    the configuration reference, so the three cannot drift. Infinities and NaN are never allowed."""

    at_least: float | None = None      # at most one lower bound: at_least or above
    at_most: float | None = None       # at most one upper bound: at_most or below
    above: float | None = None
    below: float | None = None
    multiple_of: int | None = None

    def allows(self, value: float) -> bool:
        return (math.isfinite(value)
                and (self.at_least is None or value >= self.at_least)
                and (self.at_most is None or value <= self.at_most)
                and (self.above is None or value > self.above)
                and (self.below is None or value < self.below)
                and (self.multiple_of is None or value % self.multiple_of == 0))

    def describe(self, kind: type | None = None) -> str:
        """``"an integer from 2 to 1,000,000"`` for ``kind`` int, ``"a number > 0 and ≤ 1"`` for
        float; without ``kind``, the bounds alone (``"from 2 to 1,000,000"``)."""
        if self.at_least is not None and self.at_most is not None:
            text = f"from {_number(self.at_least)} to {_number(self.at_most)}"
        else:
            text = " and ".join(f"{sign} {_number(limit)}" for sign, limit in
                                (("≥", self.at_least), (">", self.above), ("≤", self.at_most), ("<", self.below))
                                if limit is not None)
        text += f", a multiple of {self.multiple_of}" if self.multiple_of else ""
        noun = {int: "an integer", float: "a number"}.get(kind)
        return f"{noun} {text}" if noun else text


# Ranges that several settings (config keys and command-line flags) share.
#: A random seed: accelerate's ``set_seed`` also seeds NumPy, which takes seeds below 2³².
SEED = Range(0, 2**32 - 1)
#: A probability or a share of something.
FRACTION = Range(0, 1)
#: A cosine similarity.
COSINE = Range(-1, 1)
#: A side of a centred box, as a fraction of the image's shorter side.
BOX = Range(at_most=1, above=0)
#: Denoising steps of a diffusion sampler: 1000 is the length of the noise schedules it samples.
DENOISING_STEPS = Range(1, 1000)
#: A side in pixels of an image a diffusion model renders: a multiple of 8 (the VAE's factor), and
#: at most 4096, 16 times SDXL's native pixel count (activation memory grows with the pixel count).
IMAGE_SIDE = Range(8, 4096, multiple_of=8)
#: Images a diffusion model renders or trains on at once: all of them, and their activations, are on
#: the device together (256 is 16 times the batch a dataset run uses by default).
DIFFUSION_BATCH = Range(1, 256)
#: Face crops per recogniser batch (112 px crops: 4096 of them are 600 MB as float32).
FACE_BATCH = Range(1, 4096)
#: Side in pixels of the aligned face crops a recogniser reads; every crop of a data set is held in
#: memory (side² × 3 bytes each: 37 KB at 112 px, 768 KB at 512 px).
CROP_SIDE = Range(8, 512)
#: Length of an identity or embedding vector (recognisers give 128 or 512); 1024 bounds the memory of
#: the vectors a data set holds (a million 1024-d float32 vectors are 4 GB).
EMBEDDING_DIM = Range(2, 1024)
#: The insightface detector's input side: a multiple of its coarsest stride, 32.
DET_SIZE = Range(32, 2048, multiple_of=32)
#: dlib detector upsampling: each step doubles the photo's width and height (4 times the memory).
UPSAMPLE = Range(0, 3)


def ranged(default: Any = dataclasses.MISSING, allowed: Range | None = None, *,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field holding a number (or, for a ``list[float]`` field, numbers) that must lie in
    ``allowed``. ``None``, where the field's type allows it, is always accepted."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_RANGE: allowed})


def value_range(field: dataclasses.Field) -> Range | dict | None:
    """The :class:`Range` declared for a field, or for a free mapping ``{key: (int or float, Range)}``
    for its numeric keys; ``None`` for a field without one."""
    return field.metadata.get(_RANGE)


def declared_range(cls, name: str) -> Range | None:
    """The :class:`Range` of the field ``name`` of the dataclass ``cls`` (for a flag of the same setting)."""
    return value_range({f.name: f for f in dataclasses.fields(cls)}[name])


def path_field(default: Any = dataclasses.MISSING, rule: PathRule | dict = PATH, *,
               default_factory: Any = dataclasses.MISSING, ranges: dict | None = None) -> Any:
    """A dataclass field whose value is a path, resolved by the module's path rule.

    ``rule`` is :data:`PATH`, :data:`MODEL` or a :class:`PathRule`; for a section or a free mapping,
    a ``{key: rule}`` mapping for the keys inside it (added to any the section's own class marks).
    ``ranges``, for a free mapping: ``{key: (int or float, Range)}`` for the numeric keys inside it.
    """
    metadata = {_PATH_RULE: rule, **({_RANGE: ranges} if ranges else {})}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


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


#: A config file larger than this is surely not one (a data file given by mistake): refused unread.
MAX_CONFIG_BYTES = 1 << 20


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """``"line L, column C: <what is wrong>"`` of a YAML error, on one line."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None and getattr(exc, "position", None) is not None:   # a character YAML does not allow
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"line {line + 1}, column {column + 1}: character #x{code:04x} is not allowed in YAML"
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a YAML file (``{}`` for an empty file), or a one-line ConfigError
    naming it (and, for a file that is not YAML text, the line and column)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, too large for a config file (at most "
                          f"{MAX_CONFIG_BYTES:,}); is it the right file?")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}, line {line}: not a text file (byte {exc.start} is not UTF-8); a config is "
                          "a YAML text file") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}, {_yaml_problem(exc, text)}: not valid YAML") from None
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
        try:
            value = {leaf: yaml.safe_load(raw)}  # "" → None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML "
                              f"({_yaml_problem(exc, raw).removeprefix('line 1, ')})") from None
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


@contextmanager
def config_source(source: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Iterator[None]:
    """Inside, a ConfigError about a key gets the origin of that key's value in front: the last
    override that set it (or a section above it), else ``source`` (the config file, or a label such
    as ``"config"`` for settings given in code): ``synth.yaml: config key identities.count must be …``."""
    try:
        yield
    except ConfigError as exc:
        origin = str(source) if source is not None else "config"
        for item in reversed(list(overrides)):
            key = item.partition("=")[0].strip()
            if exc.key is not None and (exc.key == key or exc.key.startswith((key + ".", key + "["))):
                origin = f"override {item!r}"
                break
        raise ConfigError(f"{origin}: {exc}", exc.key) from None


def build_dataclass(cls, values: Any, where: str = ""):
    """An instance of the dataclass ``cls`` from a nested mapping, checked strictly.

    Fields left out keep their defaults; a field whose type is a dataclass takes a mapping (``null``
    = all defaults). Numbers written as text become numbers (YAML 1.1 reads ``1e-4`` as a string),
    an int is accepted where a float belongs, and YAML's bare ``no``/``yes`` (read as booleans) are
    given back as text where text belongs. A number outside the :class:`Range` its field declares
    (:func:`ranged`) is an error giving the range. ``where`` is the dotted name of this section, for
    errors; each error's ``key`` is the dotted key at fault.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"config key {where or 'top level'} is a section; give it a mapping of keys, not {values!r}",
                          where or None)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        dotted = [f"{where}.{key}" if where else str(key) for key in unknown]
        raise ConfigError(f"unknown config key {', '.join(dotted)}; known keys here: {', '.join(sorted(fields))}",
                          dotted[0])
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = build_dataclass(hints[key], {} if value is None else value, name)
        else:
            kwargs[key] = _in_range(_checked(value, hints[key], name), hints[key], value_range(fields[key]), name)
    required = [name for name, f in fields.items() if name not in kwargs
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise ConfigError(f"config {where or 'top level'} is missing required key(s) {', '.join(required)}",
                          f"{where}.{required[0]}" if where else required[0])
    return cls(**kwargs)


class YamlConfig:
    """The one loader shape of every YAML-configured command: its schema, a dataclass deriving from this,
    is read with ``Schema.load(path, overrides)`` (a file, optional, then ``section.key=value``
    overrides) or built from settings given in code with ``Schema.from_dict(values)``. Checks that
    involve several keys belong in the dataclass's ``__post_init__``: they run inside the loader, so
    their errors name the file or the override the bad value came from."""

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()):
        """Read a YAML file (optional) and apply ``section.key=value`` overrides (YAML values); relative
        paths in the file are relative to it, in overrides to the current directory (:func:`load_settings`)."""
        values = load_settings(cls, path, overrides)
        with config_source(path, overrides):
            return build_dataclass(cls, cls.prepare(values))

    @classmethod
    def from_dict(cls, values: dict | None, overrides: Sequence[str] = (), source: str = "config"):
        """The config of the nested settings ``values`` (relative paths: to the current directory) with
        ``overrides`` on top; an error names the override or ``source`` (where ``values`` came from)."""
        values = apply_overrides(copy.deepcopy(values or {}), list(overrides), cls)
        with config_source(source, overrides):
            return build_dataclass(cls, cls.prepare(values))

    @classmethod
    def prepare(cls, values: dict) -> dict:
        """The settings as read, before they are built: a schema overrides this to refuse settings that
        its types alone allow."""
        return values


def check_ranges(config) -> None:
    """A ConfigError naming the first numeric field of the dataclass instance ``config`` that lies
    outside its declared :class:`Range`: for settings built in code rather than read by
    :func:`build_dataclass` (call it from ``__post_init__``)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, allowed = getattr(config, field.name), value_range(field)
        if allowed is not None and isinstance(value, (numbers.Real, list)) and not isinstance(value, bool):
            _in_range(value, hints[field.name], allowed, field.name)


def _options(hint: Any) -> tuple[list, bool]:
    """The types a field annotated ``hint`` takes, and whether it may be null."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return options, len(options) < len(typing.get_args(hint))
    return [hint], False


def _in_range(value: Any, hint: Any, allowed: Range | dict | None, name: str) -> Any:
    """``value`` (already of its field's type ``hint``) checked against the field's ``allowed`` range:
    a number, each number of a ``list[float]``, or each numeric key of a free mapping."""
    if value is None or allowed is None:
        return value
    if isinstance(allowed, dict):
        checked = dict(value)
        for key, (kind, limits) in allowed.items():
            if checked.get(key) is not None:
                number = _in_range(_checked(checked[key], kind, f"{name}.{key}"), kind, limits, f"{name}.{key}")
                if isinstance(checked[key], str):    # text such as "1e-4" becomes the number; numbers stay as written
                    checked[key] = number
        return checked
    kind = _options(hint)[0][0]
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        return [_in_range(number, item, allowed, f"{name}[{index}]") for index, number in enumerate(value)]
    if not allowed.allows(value):
        raise ConfigError(f"config key {name} must be {allowed.describe(kind)}, got {value!r}", name)
    return value


def _checked(value: Any, hint: Any, name: str) -> Any:
    """``value`` for a field annotated ``hint`` (``int``, ``float | None``, ``list``, ``list[float]``,
    ``Any`` …)."""
    options, optional = _options(hint)
    if value is None:
        if optional or hint is Any:
            return None
        raise ConfigError(f"config key {name} may not be null", name)
    if len(options) != 1 or options[0] is Any:
        return value
    kind = options[0]
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {name} must be a list, got {value!r}", name)
        item = typing.get_args(kind)[0]
        return [_checked(number, item, f"{name}[{index}]") for index, number in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name} must be true or false, got {value!r}", name)
    elif kind is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"config key {name} must be a number, got {value!r}", name) from None
    elif kind is str and isinstance(value, bool):
        return "yes" if value else "no"
    elif kind in (int, str, list, dict) and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        expected = {int: "an integer", str: "text", list: "a list", dict: "a mapping"}[kind]
        raise ConfigError(f"config key {name} must be {expected}, got {value!r}", name)
    return value
