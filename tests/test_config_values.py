"""Every numeric setting is range-checked where its config is built, with the key and the range in
the message, and the same range backs the command-line flags and the configuration reference.

The out-of-range values are derived from each schema's own declarations (:func:`idgen.config.ranged`),
and a separate test fails for a numeric field that declares none, so a new setting cannot slip by.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import types
import typing
from pathlib import Path

import pytest

from idgen.cli import build_parser, main
from idgen.config import Range, value_range
from idgen.errors import ConfigError
from idgen.models import FaceTransformerConfig, model_config
from idgen.recognition.data import FaceDataConfig
from idgen.recognition.trainer import FIT_OPTIONS, RECIPES, FaceTransformerRecipe, IResNetRecipe
from idgen.synth import SynthConfig
from idgen.training import TrainConfig
from idgen.unlearn import RunConfig
from idgen.unlearn.generator import GeneratorForgetConfig

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- walking the schemas
def _number_kind(hint):
    """``(int or float, is a list)`` for a numeric field's annotation, else ``None``."""
    options = [hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
    if len(options) != 1:
        return None
    kind = options[0]
    if typing.get_origin(kind) is list and typing.get_args(kind)[0] in (int, float):
        return typing.get_args(kind)[0], True
    return (kind, False) if kind in (int, float) else None


def fields_of(schema, prefix: str = ""):
    """``(dotted key, field, annotation)`` of every field of ``schema`` and of its sections."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from fields_of(hint, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", field, hint


def numeric_keys(schema):
    """``(dotted key, kind, Range, is a list)`` of every declared numeric setting of ``schema``,
    the numeric keys of its free mappings included."""
    for key, field, hint in fields_of(schema):
        allowed = value_range(field)
        if isinstance(allowed, dict):
            for name, (kind, limits) in allowed.items():
                yield f"{key}.{name}", kind, limits, False
        elif allowed is not None:
            kind, is_list = _number_kind(hint)
            yield key, kind, allowed, is_list


def outside(kind, allowed: Range) -> list:
    """Values just outside ``allowed``: past each bound, off the multiple, and for numbers ±inf and NaN."""
    step = 1 if kind is int else 0.5
    bad = [allowed.at_least - step if allowed.at_least is not None else None, allowed.above,
           allowed.at_most + step if allowed.at_most is not None else None, allowed.below]
    if allowed.multiple_of:
        bad.append(allowed.at_least + 1)
    if kind is float:
        bad += [math.inf, -math.inf, math.nan]
    return [kind(value) if not (isinstance(value, float) and not math.isfinite(value)) else value
            for value in bad if value is not None]


def yaml_text(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def override_cases(schema, skip=()):
    """``(override, key the error names, kind, Range)`` for every out-of-range value of every
    numeric key of ``schema``."""
    cases = []
    for key, kind, allowed, is_list in numeric_keys(schema):
        if key in skip:
            continue
        for value in outside(kind, allowed):
            text = yaml_text(value)
            if is_list:
                cases.append(pytest.param(f"{key}=[{text}]", f"{key}[0]", kind, allowed, id=f"{key}=[{text}]"))
            else:
                cases.append(pytest.param(f"{key}={text}", key, kind, allowed, id=f"{key}={text}"))
    return cases


def assert_refused(load, override: str, key: str, kind, allowed: Range):
    with pytest.raises(ConfigError) as caught:
        load([override])
    message = str(caught.value)
    assert message.startswith(f"override {override!r}: config key {key} must be {allowed.describe(kind)}, got "), message
    assert caught.value.key == key


def refused_in_code(key: str, kind, allowed: Range):
    """``pytest.raises`` for a setting given in code: the message names the key and its range."""
    return pytest.raises(ConfigError, match=f"^{re.escape(f'config key {key} must be {allowed.describe(kind)}, got ')}")


# ---------------------------------------------------------------- one test per schema
@pytest.mark.parametrize("override, key, kind, allowed", override_cases(SynthConfig))
def test_dataset_config_refuses_every_out_of_range_number(override, key, kind, allowed):
    assert_refused(lambda overrides: SynthConfig.load(None, overrides), override, key, kind, allowed)


@pytest.mark.parametrize("override, key, kind, allowed", override_cases(TrainConfig))
def test_training_config_refuses_every_out_of_range_number(override, key, kind, allowed):
    assert_refused(lambda overrides: TrainConfig.load(ROOT / "training/configs/id_adapter.yaml", overrides),
                   override, key, kind, allowed)


#: ``model.train`` of a forgetting run takes only the options of fitting a Face Transformer.
NOT_FIT = tuple(f"model.train.{f.name}" for f in dataclasses.fields(FaceTransformerRecipe) if f.name not in FIT_OPTIONS)


@pytest.mark.parametrize("override, key, kind, allowed", override_cases(RunConfig, skip=NOT_FIT))
def test_forgetting_config_refuses_every_out_of_range_number(override, key, kind, allowed, tmp_path):
    base = {"data": {"root": str(tmp_path)}, "model": {"path": str(tmp_path / "m")}, "output_dir": str(tmp_path)}
    assert_refused(lambda overrides: RunConfig.from_dict(base, overrides), override, key, kind, allowed)


def _in_code_cases(schema):
    return [pytest.param(key, value, kind, allowed, id=f"{key}={value!r}")
            for key, kind, allowed, _ in numeric_keys(schema) for value in outside(kind, allowed)]


def _recipe_cases():
    return [pytest.param(recipe, *case.values, id=f"{name}:{case.id}")
            for name, recipe in RECIPES.items() for case in _in_code_cases(recipe)]


@pytest.mark.parametrize("recipe, key, value, kind, allowed", _recipe_cases())
def test_recognizer_training_options_refuse_every_out_of_range_number(recipe, key, value, kind, allowed):
    with refused_in_code(key, kind, allowed):
        recipe(**{key: value})


@pytest.mark.parametrize("key, value, kind, allowed", _in_code_cases(GeneratorForgetConfig))
def test_generator_forgetting_settings_refuse_every_out_of_range_number(key, value, kind, allowed):
    with refused_in_code(key, kind, allowed):
        GeneratorForgetConfig(**{key: value})


@pytest.mark.parametrize("key, value, kind, allowed", _in_code_cases(FaceTransformerConfig))
def test_face_transformer_sizes_refuse_every_out_of_range_number(key, value, kind, allowed):
    with refused_in_code(key, kind, allowed):
        model_config(None, **{key: value})


@pytest.mark.parametrize("key, value, kind, allowed", _in_code_cases(FaceDataConfig))
def test_face_data_settings_refuse_every_out_of_range_number(key, value, kind, allowed):
    with refused_in_code(key, kind, allowed):
        FaceDataConfig(root="faces", **{key: value})


def test_embedding_networks_take_crops_whose_side_is_a_multiple_of_16():
    with pytest.raises(ConfigError, match="resolution 120: iresnet takes crops whose side is a multiple of 16"):
        IResNetRecipe(resolution=120)
    assert FaceTransformerRecipe(preset="cpu-small").resolution == 40


SCHEMAS = [SynthConfig, TrainConfig, RunConfig, *RECIPES.values(), GeneratorForgetConfig, FaceTransformerConfig,
           FaceDataConfig]


#: Numbers that are one of a few choices, each refused by name otherwise (IResNet's 18, 34, 50 or 100).
CHOICES = ("depth",)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_every_numeric_setting_declares_its_range(schema):
    unranged = [key for key, field, hint in fields_of(schema)
                if _number_kind(hint) and value_range(field) is None and field.name not in CHOICES]
    assert not unranged, f"numeric settings without a declared range: {unranged}"
    assert list(numeric_keys(schema))


def test_the_shipped_configs_and_every_default_are_in_range():
    for config in sorted((ROOT / "training/configs").glob("*.yaml")):
        load = RunConfig.load if "forget" in config.name else TrainConfig.load
        assert isinstance(load(config), RunConfig if "forget" in config.name else TrainConfig)
    assert SynthConfig.load(None, []).identities.count == 100
    assert TrainConfig.load(None).optim.batch_size == 4
    assert [recipe().batch_size for recipe in RECIPES.values()] == [64] * len(RECIPES)
    assert GeneratorForgetConfig().steps == 300
    assert [model_config(preset).depth for preset in ("paper", "cpu-small", "cpu-tiny")] == [6, 4, 4]


def test_a_face_transformer_too_fine_to_fit_is_refused_when_the_forgetting_config_is_read(tmp_path):
    base = {"data": {"root": str(tmp_path), "resolution": 512}, "model": {"path": "m"}, "output_dir": "o"}
    with pytest.raises(ConfigError, match="override 'model.overrides={patch_size: 2}': model.overrides: "
                                          "resolution 512 / patch_size 2 makes 65536 patches; at most 4096"):
        RunConfig.from_dict(base, ["model.overrides={patch_size: 2}"])
    with pytest.raises(ConfigError, match="config key dim must be an integer from 1 to 4,096, got 0"):
        RunConfig.from_dict(base, ["model.overrides={dim: 0}"])


# ---------------------------------------------------------------- where the value came from
def test_the_error_names_the_file_or_the_override_that_set_the_value(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("optim:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=f"^{config}: config key optim.batch_size must be an integer from 1 to 256"):
        TrainConfig.load(config)
    assert TrainConfig.load(config, ["optim.batch_size=2"]).optim.batch_size == 2   # fixed by an override
    with pytest.raises(ConfigError, match="^override 'optim={batch_size: 0}': config key optim.batch_size"):
        TrainConfig.load(None, ["optim={batch_size: 0}"])
    with pytest.raises(ConfigError, match="^override 'task=draw': unknown task 'draw'"):
        TrainConfig.load(config, ["optim.batch_size=2", "task=draw"])
    with pytest.raises(ConfigError, match="^demo dataset: config key identities.count must be an integer from 2"):
        SynthConfig.from_dict({"identities": {"count": 1}}, source="demo dataset")


# ---------------------------------------------------------------- end to end through the command line
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("idgen: error: ") and "Traceback" not in err, err
    return err.removeprefix("idgen: error: ").rstrip("\n")


@pytest.mark.parametrize("override, message", [
    ("identities.count=1", "config key identities.count must be an integer from 2 to 1,000,000, got 1"),
    ("identities.count=0", "config key identities.count must be an integer from 2 to 1,000,000, got 0"),
    ("identities.count=-5", "config key identities.count must be an integer from 2 to 1,000,000, got -5"),
    ("identities.count=1000000000", "config key identities.count must be an integer from 2 to 1,000,000, "
                                    "got 1000000000"),
    ("identities.count=1e9", "config key identities.count must be an integer, got '1e9'"),
    ("generator.height=100000", "config key generator.height must be an integer from 8 to 4,096, a multiple of 8, "
                                "got 100000"),
    ("generator.width=100000", "config key generator.width must be an integer from 8 to 4,096, a multiple of 8, "
                               "got 100000"),
    ("runtime.batch_size=0", "config key runtime.batch_size must be an integer from 1 to 256, got 0"),
    ("identities.count=[1", "the value is not valid YAML (column 3: expected ',' or ']', but got '<stream end>')"),
])
def test_dataset_generate_refuses_a_bad_value_in_one_line_before_any_work(override, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["dataset", "generate", f"output_dir={out}", "generator.type=mini", override]) == 1
    assert one_error_line(capsys) == f"override {override!r}: {message}"
    assert not out.exists()


def test_dataset_generate_names_a_binary_or_broken_config_file_and_its_line(tmp_path, capsys):
    binary = tmp_path / "synth.yaml"
    binary.write_bytes(b"output: out\n\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert main(["dataset", "generate", "--config", str(binary)]) == 1
    assert one_error_line(capsys) == (f"{binary}, line 2: not a text file (byte 12 is not UTF-8); a config is a "
                                      "YAML text file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("output: out\nidentities:\n  count: [1\nseed: 0\n")
    assert main(["dataset", "generate", "--config", str(broken)]) == 1
    assert one_error_line(capsys).startswith(f"{broken}, line 4, column 5: ")
    in_file = tmp_path / "count.yaml"
    in_file.write_text("identities: {count: 1}\n")
    assert main(["dataset", "generate", "--config", str(in_file)]) == 1
    assert one_error_line(capsys) == (f"{in_file}: config key identities.count must be an integer from 2 to "
                                      "1,000,000, got 1")


def test_forget_refuses_a_bad_value_in_one_line(capsys):
    assert main(["forget", "--config", str(ROOT / "training/configs/forget_orl.yaml"), "forget.batch_size=0"]) == 1
    assert one_error_line(capsys) == ("override 'forget.batch_size=0': config key forget.batch_size must be an "
                                      "integer from 1 to 4,096, got 0")


def test_forget_names_an_unknown_key_in_one_line(capsys):
    assert main(["forget", "--config", str(ROOT / "training/configs/forget_orl.yaml"), "forget.lerning_rate=1"]) == 1
    assert one_error_line(capsys).startswith("override 'forget.lerning_rate=1': unknown config key forget.lerning_rate")


def train_script():
    spec = importlib.util.spec_from_file_location("idgen_train_script", ROOT / "training" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("override, message", [
    ("optim.batch_size=0", "config key optim.batch_size must be an integer from 1 to 256, got 0"),
    ("logging.checkpoint_every=0", "config key logging.checkpoint_every must be an integer ≥ 1, got 0"),
    ("optim.max_steps=-5", "config key optim.max_steps must be an integer ≥ 1, got -5"),
    ("optim.betas=[0.9]", "optim.betas must be two numbers (AdamW's beta1 and beta2), got [0.9]"),
])
def test_the_training_launcher_refuses_a_bad_value_before_training(override, message):
    train = train_script()
    args = train.parse_args(["--config", str(ROOT / "training/configs/id_adapter.yaml"), override])
    with pytest.raises(ConfigError) as caught:
        train.load(args)
    assert str(caught.value) == f"override {override!r}: {message}"


def test_the_training_launcher_runs_no_forgetting_config():
    """Forgetting runs through ``idgen forget`` only: to the launcher a forgetting config is a
    training config with unknown keys."""
    train = train_script()
    with pytest.raises(ConfigError, match="unknown config key"):
        train.load(train.parse_args(["--config", str(ROOT / "training/configs/forget_orl.yaml")]))


@pytest.mark.parametrize("argv, message", [
    (["generate", "--random-identity", "--output-dir", "o", "--count", "0"], "argument --count: must be an integer from 1 to 64, got 0"),
    (["generate", "--random-identity", "--output-dir", "o", "--count", "many"], "argument --count: must be an integer from 1 to 64, got 'many'"),
    (["generate", "--random-identity", "--output-dir", "o", "--seed", "-1"], "argument --seed: must be an integer from 0 to 4,294,967,295, got -1"),
    (["generate", "--random-identity", "--output-dir", "o", "--steps", "0"], "argument --steps: must be an integer from 1 to 1,000, got 0"),
    (["generate", "--random-identity", "--output-dir", "o", "--guidance", "nan"], "argument --guidance: must be a number ≥ 0, got nan"),
    (["generate", "--random-identity", "--output-dir", "o", "--det-size", "100"], "argument --det-size: must be an integer from 32 to 2,048, a multiple of 32, got 100"),
    (["edit", "restyle", "--photo", "p", "--output-file", "o.png", "--strength", "1.5"], "argument --strength: must be a number from 0 to 1, got 1.5"),
    (["edit", "replace", "--photo", "p", "--identity", "i", "--output-file", "o.png", "--size", "100000"], "argument --size: must be an integer from 8 to 4,096, a multiple of 8, got 100000"),
    (["embed", "f", "--output-file", "o", "--batch-size", "0"], "argument --batch-size: must be an integer from 1 to 4,096, got 0"),
    (["embed", "f", "--output-file", "o", "--upsample", "9"], "argument --upsample: must be an integer from 0 to 3, got 9"),
    (["eval", "verify", "--bin", "b", "--fallback-box", "0"], "argument --fallback-box: must be a number > 0 and ≤ 1, got 0"),
    (["recognizer", "train", "--architecture", "mobilefacenet", "--data", "d", "--output-dir", "o", "--epochs", "0"], "argument --epochs: must be an integer ≥ 1, got 0"),
    (["recognizer", "train", "--architecture", "iresnet", "--data", "d", "--output-dir", "o", "--batch-size", "100000"], "argument --batch-size: must be an integer from 1 to 4,096, got 100000"),
    (["recognizer", "train", "--architecture", "mobilefacenet", "--data", "d", "--output-dir", "o", "--learning-rate", "0"], "argument --learning-rate: must be a number > 0, got 0"),
    (["recognizer", "train", "--architecture", "mobilefacenet", "--data", "d", "--output-dir", "o", "--width", "5"], "argument --width: must be a number > 0 and ≤ 4, got 5"),
    (["recognizer", "train", "--architecture", "face-transformer", "--data", "d", "--output-dir", "o", "--test-fraction", "1"], "argument --test-fraction: must be a number > 0 and < 1, got 1"),
    (["recognizer", "train", "--architecture", "mobilefacenet", "--data", "d", "--output-dir", "o", "--embedding-size", "100000"], "argument --embedding-size: must be an integer from 2 to 1,024, got 100000"),
    (["recognizer", "train", "--architecture", "face-transformer", "--data", "d", "--output-dir", "o", "--resolution", "4"], "argument --resolution: must be an integer from 8 to 512, got 4"),
])
def test_number_flags_are_range_checked_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(f"error: {message}")


def test_the_config_reference_shows_each_range():
    spec = importlib.util.spec_from_file_location("idgen_docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    synth = hooks.config_reference("idgen.synth.config:SynthConfig")
    assert "| `identities.count` | int | `100` | from 2 to 1,000,000 |" in synth
    assert "`height`: from 8 to 4,096, a multiple of 8" in synth
    assert "| `optim.betas` | list[float] | `[0.9, 0.999]` | ≥ 0 and &lt; 1 |" in hooks.config_reference(
        "idgen.training.config:TrainConfig")
    assert "| `epochs` | int | `30` | ≥ 1 |" in hooks.config_reference("idgen.recognition.trainer:FaceTransformerRecipe")
