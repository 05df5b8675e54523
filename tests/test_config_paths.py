"""One override syntax and one path rule for every YAML-configured command (idgen.config).

Overrides are positional ``section.key=value`` arguments everywhere. A relative path written in a config file is relative
to that file's folder; one given as an override is relative to the current directory. Hub ids,
names and absolute paths are left alone.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from idgen.cli import build_parser
from idgen.cli import dataset as dataset_cli
from idgen.cli import forget as forget_cli
from idgen.config import MODEL, PATH, PathRule, load_settings, path_field, resolve_path

ROOT = Path(__file__).resolve().parents[1]


def train_script():
    """``training/train.py`` as a module (its ``parse_args`` and ``load``, the launcher's loader)."""
    spec = importlib.util.spec_from_file_location("idgen_train_script", ROOT / "training" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train():
    return train_script()


def write(folder: Path, name: str, settings: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def configs(tmp_path):
    """A forgetting, a training and a dataset config in ``tmp_path/conf``, with relative paths."""
    conf = tmp_path / "conf"
    (conf / "tok").mkdir(parents=True)          # a tokenizer folder next to the config
    forget = write(conf, "forget.yaml", {"data": {"root": "faces", "cache_dir": "cache"},
                                         "model": {"path": "models/base",
                                                   "train": {"distill_from": "mobilefacenet:teacher.onnx"}},
                                         "output_dir": "runs/forget"})
    training = write(conf, "train.yaml", {"task": "id-adapter", "output_dir": "runs/train",
                                          "model": {"pretrained": "runwayml/stable-diffusion-v1-5",
                                                    "tokenizer": "tok", "arc2face": "FoivosPar/Arc2Face"},
                                          "data": {"faces_dir": "faces", "recognizer": "dlib",
                                                   "exclude_people": ["people.txt", "/abs/people.txt"]}})
    synth = write(conf, "synth.yaml", {"output_dir": "out/faces",
                                       "generator": {"type": "photo", "photos": "faces"},
                                       "identities": {"prior": "prior.safetensors"},
                                       "variation": {"poses": "default"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return {"conf": conf.resolve(), "forget": forget, "train": training, "synth": synth,
            "elsewhere": elsewhere.resolve()}


def forget_config(argv):
    return forget_cli.load(build_parser().parse_args(["forget", *argv]))


def dataset_config(argv):
    return dataset_cli.load(build_parser().parse_args(["dataset", "generate", *argv]))


# ---------------------------------------------------------------- one override syntax
def test_the_same_override_gives_the_same_config_through_every_loader(configs, train, monkeypatch, capsys):
    monkeypatch.chdir(configs["elsewhere"])
    overrides = ["seed=7", "output_dir=mine", "tasks.seed=3", "baselines.methods=[finetune]"]
    by_cli = forget_config(["--config", str(configs["forget"]), *overrides])
    assert (by_cli.seed, by_cli.tasks.seed, by_cli.baselines.methods) == (7, 3, ["finetune"])
    assert by_cli.output_dir == str(configs["elsewhere"] / "mine")

    trained = train.load(train.parse_args(["--config", str(configs["train"]), "seed=7", "output_dir=mine"]))
    made = dataset_config(["--config", str(configs["synth"]), "seed=7", "output_dir=mine"])
    assert trained.seed == made.seed == 7
    assert trained.output_dir == made.output_dir == str(configs["elsewhere"] / "mine")
    # the libraries' own loaders are the commands' loaders
    from idgen.synth import SynthConfig
    from idgen.training import TrainConfig
    from idgen.unlearn import RunConfig

    assert RunConfig.load(configs["forget"], overrides) == by_cli
    assert TrainConfig.load(configs["train"], ["seed=7", "output_dir=mine"]) == trained
    assert SynthConfig.load(configs["synth"], ["seed=7", "output_dir=mine"]) == made


def test_forget_output_dir_flag_is_relative_to_the_current_directory(configs, monkeypatch):
    monkeypatch.chdir(configs["elsewhere"])
    config = forget_config(["--config", str(configs["forget"]), "--output-dir", "here"])
    assert config.output_dir == str(configs["elsewhere"] / "here")


# ---------------------------------------------------------------- one path rule
@pytest.mark.parametrize("cwd", ["elsewhere", "conf"])
def test_paths_in_a_file_are_relative_to_its_folder_whatever_the_cwd(configs, train, monkeypatch, cwd):
    monkeypatch.chdir(configs[cwd])
    conf = configs["conf"]
    forget = forget_config(["--config", str(configs["forget"])])
    assert forget.data.root == str(conf / "faces") and forget.data.cache_dir == str(conf / "cache")
    assert forget.model.path == str(conf / "models/base") and forget.output_dir == str(conf / "runs/forget")
    assert forget.model.train.distill_from == f"mobilefacenet:{conf / 'teacher.onnx'}"
    trained = train.load(train.parse_args(["--config", str(configs["train"])]))
    assert trained.output_dir == str(conf / "runs/train") and trained.data.faces_dir == str(conf / "faces")
    assert trained.data.exclude_people == [str(conf / "people.txt"), "/abs/people.txt"]
    assert trained.model.tokenizer == str(conf / "tok")          # a folder that exists there
    made = dataset_config(["--config", str(configs["synth"])])
    assert made.output_dir == str(conf / "out/faces") and made.generator["photos"] == str(conf / "faces")
    assert made.identities.prior == str(conf / "prior.safetensors")


def test_a_config_given_by_a_relative_path(configs, monkeypatch):
    monkeypatch.chdir(configs["conf"].parent)
    config = forget_config(["--config", "conf/forget.yaml"])
    assert config.data.root == str(configs["conf"] / "faces")


def test_override_paths_are_relative_to_the_current_directory(configs, train, monkeypatch):
    here = configs["elsewhere"]
    monkeypatch.chdir(here)
    (here / "tok2").mkdir()
    forget = forget_config(["--config", str(configs["forget"]), "data.root=photos", "model.path=../base",
                            "model.train.distill_images=more", "data={root: whole, cache_dir: c}"])
    assert forget.data.root == str(here / "whole") and forget.data.cache_dir == str(here / "c")  # a whole section
    assert forget.model.path == str(here.parent / "base") and forget.model.train.distill_images == str(here / "more")
    trained = train.load(train.parse_args(["--config", str(configs["train"]), "data.faces_dir=photos",
                                           "model.tokenizer=tok2", "model.vae=runs/vae",
                                           "data.exclude_people=[a.txt]"]))
    assert trained.data.faces_dir == str(here / "photos") and trained.model.tokenizer == str(here / "tok2")
    assert trained.model.vae == str(here / "runs/vae") and trained.data.exclude_people == [str(here / "a.txt")]
    made = dataset_config(["--config", str(configs["synth"]), "generator.photos=pics", "output_dir=o"])
    assert made.generator["photos"] == str(here / "pics") and made.output_dir == str(here / "o")


def test_hub_ids_names_and_absolute_paths_are_left_alone(configs, train, monkeypatch, tmp_path):
    monkeypatch.chdir(configs["elsewhere"])
    trained = train.load(train.parse_args(["--config", str(configs["train"]),
                                           f"data.identity_cache={tmp_path / 'ids.safetensors'}",
                                           "validation.recognizer=mobilefacenet"]))
    assert trained.model.pretrained == "runwayml/stable-diffusion-v1-5"
    assert trained.model.arc2face == "FoivosPar/Arc2Face"
    assert trained.data.recognizer == "dlib" and trained.data.detector == "dlib"
    assert trained.validation.recognizer == "mobilefacenet"
    assert trained.data.identity_cache == str(tmp_path / "ids.safetensors")
    no_file = train.load(train.parse_args(["--config", str(configs["train"]),
                                           "model.tokenizer=openai/clip-vit-large-patch14"]))
    assert no_file.model.tokenizer == "openai/clip-vit-large-patch14"
    made = dataset_config(["--config", str(configs["synth"]), "generator.path=InstantX/InstantID"])
    assert made.variation.poses == "default" and made.generator["path"] == "InstantX/InstantID"
    forget = forget_config(["--config", str(configs["forget"]), "data.root=/data/orl", "seed=3"])
    assert forget.data.root == "/data/orl" and forget.seed == 3
    defaults = train.load(train.parse_args(["--config", str(write(tmp_path, "empty.yaml", {}))]))
    assert defaults.output_dir == "runs/idgen"                     # defaults are not rewritten


@dataclass
class _Section:
    file: str | None = path_field(None)
    model: str = path_field("org/name", MODEL)
    number: int = 1
    name: str = "dlib"


@dataclass
class _Schema:
    out: str = path_field("o")
    section: _Section = field(default_factory=_Section)
    free: dict = path_field(default_factory=dict, rule={"photos": PATH})


def test_load_settings_marks_only_the_path_fields(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)            # an existing folder spelt like a hub id
    path = write(tmp_path, "c.yaml", {"out": "~/x", "section": {"file": "f", "model": "org/name", "name": "n/a"},
                                      "free": {"photos": ["a", "b"], "other": "c"}})
    monkeypatch.chdir(tmp_path.parent)
    values = load_settings(_Schema, path, ["section.number=2"])
    assert values == {"out": str(Path("~/x").expanduser()),
                      "section": {"file": str(tmp_path / "f"), "model": str(tmp_path / "org/name"), "name": "n/a",
                                  "number": 2},
                      "free": {"photos": [str(tmp_path / "a"), str(tmp_path / "b")], "other": "c"}}
    prefixed = PathRule(prefixed=True)
    assert resolve_path("mobilefacenet:m.onnx", tmp_path, prefixed) == f"mobilefacenet:{tmp_path / 'm.onnx'}"
    assert resolve_path("C:x", tmp_path, prefixed) == str(tmp_path / "C:x")   # a drive letter is no prefix
    assert resolve_path(None) is None and resolve_path(3) == 3


# ---------------------------------------------------------------- the shipped configs
SHIPPED = sorted((ROOT / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_state_the_rule_and_mean_the_same_from_anywhere(config, train, monkeypatch, tmp_path):
    header = config.read_text().split("\n")
    header = header[:next(i for i, line in enumerate(header) if not line.startswith("#"))]
    assert "# Relative paths are relative to this file; in command-line overrides, to the current directory." in header
    if config.name.startswith("forget_"):   # forgetting runs through `idgen forget`, the rest through train.py
        def load():
            return forget_config(["--config", str(config)])
    else:
        def load():
            return train.load(train.parse_args(["--config", str(config)]))
    monkeypatch.chdir(ROOT)
    from_root = load()
    monkeypatch.chdir(tmp_path)
    assert load() == from_root
    assert Path(from_root.output_dir).is_relative_to(ROOT / "runs")


def test_every_yaml_schema_has_the_one_loader_shape(configs):
    """``Schema.load(path, overrides)`` and ``Schema.from_dict(values, overrides)`` for every YAML-configured
    command, the same code for each (idgen.config.YamlConfig), giving equal configs from a file and its mapping."""
    import yaml

    from idgen.config import YamlConfig
    from idgen.synth import SynthConfig
    from idgen.training import TrainConfig
    from idgen.unlearn import RunConfig

    for schema, name in ((TrainConfig, "train"), (RunConfig, "forget"), (SynthConfig, "synth")):
        assert issubclass(schema, YamlConfig)
        assert (schema.load.__func__, schema.from_dict.__func__) == (YamlConfig.load.__func__,
                                                                     YamlConfig.from_dict.__func__)
        loaded = schema.load(configs[name], ["seed=5"])
        settings = yaml.safe_load(configs[name].read_text())
        assert loaded.seed == 5 and schema.from_dict(settings, ["seed=5"]).seed == 5
