"""``idgen dataset generate`` without a config: which generator runs, and a whole offline run."""

from __future__ import annotations

import json

import pytest
from hub_cache import cache_file

from idgen.cli import build_parser, main


@pytest.fixture
def empty_machine(tmp_path, monkeypatch):
    """An empty hub cache (nothing downloaded) and no IDGEN_* model variables."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    for name in ("IDGEN_MODEL", "IDGEN_BASE", "IDGEN_ARC2FACE", "IDGEN_TINY"):
        monkeypatch.delenv(name, raising=False)
    return cache


def config_of(argv):
    from idgen.cli.dataset import load

    return load(build_parser().parse_args(["dataset", "generate", *argv]))


def test_without_a_config_the_generator_is_arc2face_when_downloaded_else_mini(empty_machine, monkeypatch, capsys):
    config = config_of([])
    assert config.generator == {"type": "mini"}
    assert (config.identities.dim, config.filter.recognizer, config.filter.threshold) == (128, "mobilefacenet", 0.21)
    assert ("generator: the embedded mini model: 64×64 faces, trained on LFW, offline (FoivosPar/Arc2Face is not "
            "downloaded on this machine); set generator.type to choose (`idgen doctor`") in capsys.readouterr().err

    cache_file(empty_machine, "stable-diffusion-v1-5/stable-diffusion-v1-5", "model_index.json")
    cache_file(empty_machine, "FoivosPar/Arc2Face", "arc2face/config.json")
    config = config_of(["generator.num_inference_steps=30"])
    assert config.generator == {"type": "arc2face", "path": "FoivosPar/Arc2Face", "num_inference_steps": 30,
                                "base": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
    assert (config.identities.dim, config.filter.recognizer, config.filter.threshold) == (512, "dlib", 0.5)
    assert ("generator: Arc2Face FoivosPar/Arc2Face on stable-diffusion-v1-5/stable-diffusion-v1-5 (its weights are on "
            "this machine)") in capsys.readouterr().err

    monkeypatch.setenv("IDGEN_MODEL", "mini")          # asked for explicitly, as for `idgen generate`
    assert config_of([]).generator == {"type": "mini"}
    capsys.readouterr()


def test_a_named_generator_is_used_as_it_is_with_its_own_defaults(empty_machine, tmp_path, capsys):
    """``generator.type=mini`` alone is a whole config; a config file's generator is never replaced."""
    config = config_of(["generator.type=mini"])
    assert (config.generator, config.identities.dim, config.filter.recognizer) == ({"type": "mini"}, 128, "mobilefacenet")
    (tmp_path / "synth.yaml").write_text("generator: {type: photo, photos: faces}\n")
    config = config_of(["--config", str(tmp_path / "synth.yaml")])
    assert config.generator == {"type": "photo", "photos": str(tmp_path / "faces")}
    assert capsys.readouterr().err == ""


def test_dataset_generate_with_no_config_makes_a_readable_dataset_offline(empty_machine, tmp_path, capsys):
    """The embedded mini model, offline, tiny sizes through overrides only."""
    import datasets

    pytest.importorskip("dlib")
    out = tmp_path / "faces"
    code = main(["dataset", "generate", f"output_dir={out}", "identities.count=2", "identities.steps=0",
                 "variation.images_per_identity=1", "generator.num_inference_steps=2", "generator.micro_batch=1",
                 "runtime.batch_size=2", "runtime.device=cpu", "filter.enabled=false", "writers.formats=[parquet]"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "generator: the embedded mini model" in captured.err
    assert json.loads(captured.out)["images"] == 2
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["generator"]["type"] == "mini" and saved["identities"]["dim"] == 128
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 2 and loaded[0]["image"].size == (64, 64)
