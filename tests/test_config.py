"""The strict YAML config reader every configured command shares (idgen.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
import yaml

from idgen.config import (MAX_CONFIG_BYTES, Range, apply_overrides, build_dataclass, config_source, path_field,
                          ranged, read_yaml_mapping)
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


def test_a_file_that_is_not_yaml_text_is_one_error_naming_it_and_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("path: p\ninner:\n  rate: [1\nsteps: 2\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml_mapping(path)
    assert str(caught.value) == (f"{path}, line 4, column 6: expected ',' or ']', but got ':': not valid YAML")
    path.write_text("path: p\nname: a\x00b\n")                  # UTF-8, but a character YAML refuses
    with pytest.raises(ConfigError, match=f"^{path}, line 2, column 8: character #x0000 is not allowed in YAML"):
        read_yaml_mapping(path)
    path.write_bytes(b"path: p\n\n\xff\xd8\xff\xe0 JFIF")     # a JPEG renamed
    with pytest.raises(ConfigError, match=f"^{path}, line 3: not a text file \\(byte 9 is not UTF-8\\)"):
        read_yaml_mapping(path)
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="too large for a config file"):
        read_yaml_mapping(path)


def test_an_override_that_is_not_yaml_is_one_error_naming_it():
    with pytest.raises(ConfigError) as caught:
        apply_overrides({}, ["inner.tags=[a, b"])
    assert str(caught.value) == ("override 'inner.tags=[a, b': the value is not valid YAML (column 6: expected ',' "
                                 "or ']', but got '<stream end>')")
    with pytest.raises(ConfigError, match="override 'inner.anything=!!python/object:os.system x': the value is not "
                                          "valid YAML \\(column 1: could not determine a constructor"):
        apply_overrides({}, ["inner.anything=!!python/object:os.system x"])


@dataclass
class Ranged:
    count: int = ranged(2, Range(2, 1_000_000))
    rate: Optional[float] = ranged(None, Range(above=0))
    side: int = ranged(64, Range(8, 4096, multiple_of=8))
    betas: list[float] = ranged(default_factory=lambda: [0.5], allowed=Range(0, below=1))
    generator: dict = path_field(default_factory=dict, rule={}, ranges={"height": (int, Range(8, 64)),
                                                                       "scale": (float, Range(0))})


@pytest.mark.parametrize("values, message", [
    ({"count": 1}, "config key count must be an integer from 2 to 1,000,000, got 1"),
    ({"rate": 0}, "config key rate must be a number > 0, got 0.0"),
    ({"rate": "inf"}, "config key rate must be a number > 0, got inf"),
    ({"side": 12}, "config key side must be an integer from 8 to 4,096, a multiple of 8, got 12"),
    ({"betas": [0.5, "1e0"]}, "config key betas[1] must be a number ≥ 0 and < 1, got 1.0"),
    ({"betas": [0.5, "x"]}, "config key betas[1] must be a number, got 'x'"),
    ({"generator": {"height": 128}}, "config key generator.height must be an integer from 8 to 64, got 128"),
    ({"generator": {"scale": "-1e-1"}}, "config key generator.scale must be a number ≥ 0, got -0.1"),
])
def test_numbers_outside_their_declared_range_are_errors_giving_it(values, message):
    with pytest.raises(ConfigError) as caught:
        build_dataclass(Ranged, values)
    assert str(caught.value) == message
    assert caught.value.key == message.split()[2]


def test_numbers_in_range_are_kept_and_text_numbers_converted():
    config = build_dataclass(Ranged, {"rate": "1e-4", "betas": ["1e-1", 0], "generator": {"scale": "1e-1", "height": 8,
                                                                                         "other": -5}})
    assert config.rate == 1e-4 and config.betas == [0.1, 0.0]
    assert config.generator == {"scale": 0.1, "height": 8, "other": -5}   # keys without a range are left alone
    assert build_dataclass(Ranged, {"generator": {"scale": 3}}).generator == {"scale": 3}   # numbers stay as written


def test_the_origin_of_a_bad_value_is_the_override_that_set_it_else_the_file():
    with pytest.raises(ConfigError, match="^override 'count=1': config key count"):
        with config_source("c.yaml", ["side=16", "count=1"]):
            build_dataclass(Ranged, {"count": 1})
    with pytest.raises(ConfigError, match=r"^override 'betas=\[2\]': config key betas\[0\]"):
        with config_source("c.yaml", ["betas=[2]"]):
            build_dataclass(Ranged, {"betas": [2]})
    with pytest.raises(ConfigError, match="^c.yaml: config key count"):
        with config_source("c.yaml", ["side=16", "counter=1"]):
            build_dataclass(Ranged, {"count": 1})
