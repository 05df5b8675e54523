"""The strict YAML config reader every configured command shares (idgen.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
import yaml

from idgen.config import apply_overrides, build_dataclass, read_yaml_mapping
from idgen.errors import ConfigError


@dataclass
class Inner:
    rate: float = 0.1
    steps: int = 10
    name: str = "a"
    flag: bool = False
    limit: Optional[int] = 3
    tags: list = field(default_factory=list)
    anything: Any = None


@dataclass
class Outer:
    path: str
    inner: Inner = field(default_factory=Inner)
    ratio: float | None = None


def build(text: str, overrides=()):
    return build_dataclass(Outer, apply_overrides(yaml.safe_load(text) or {}, list(overrides)))


def test_defaults_nesting_and_yaml_quirks():
    config = build("path: p\ninner: {rate: 1e-4, steps: 5, name: no, limit: null}\nratio: 2\n")
    assert config == Outer(path="p", inner=Inner(rate=1e-4, steps=5, name="no", limit=None), ratio=2.0)
    assert isinstance(config.inner.rate, float) and isinstance(config.ratio, float)  # "1e-4" was text
    assert build("path: p\ninner:\n").inner == Inner()          # an empty section keeps every default
    assert build("path: p", ["inner.tags=[x, y]", "inner.anything={k: 1}"]).inner.tags == ["x", "y"]


@pytest.mark.parametrize("text, message", [
    ("path: p\ninner: {rnak: 4}", "unknown config key inner.rnak; known keys here: anything, flag, limit"),
    ("path: p\nepochs: 3", "unknown config key epochs"),
    ("path: p\ninner: {rate: fast}", "config key inner.rate must be a number, got 'fast'"),
    ("path: p\ninner: {rate: true}", "config key inner.rate must be a number"),
    ("path: p\ninner: {steps: 2.5}", "config key inner.steps must be an integer"),
    ("path: p\ninner: {steps: yes}", "config key inner.steps must be an integer"),
    ("path: p\ninner: {flag: 1}", "config key inner.flag must be true or false"),
    ("path: p\ninner: {tags: x}", "config key inner.tags must be a list"),
    ("path: p\ninner: {steps: null}", "config key inner.steps may not be null"),
    ("path: p\ninner: 3", "config key inner is a section"),
    ("inner: {}", "missing required key(s) path"),
])
def test_bad_values_are_errors_naming_the_key(text, message):
    with pytest.raises(ConfigError) as caught:
        build(text)
    assert message in str(caught.value)


def test_reading_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("path: p\n")
    assert read_yaml_mapping(path) == {"path": "p"}
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml_mapping(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of settings"):
        read_yaml_mapping(path)
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="'path' is not a section"):
        apply_overrides({"path": "p"}, ["path.x=1"])
