"""`idgen recognizer train --architecture …`: the flags are the fields of that architecture's recipe
(the same defaults), options of another architecture are refused by name, and the command trains
the same weights as the library call with the same recipe."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from idgen.cli import build_parser, main
from idgen.cli.recognizer import train_config
from idgen.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_defaults_are_each_architectures_own():
    from idgen.recognition import FaceDataConfig, FaceTransformerRecipe, IResNetRecipe, MobileFaceNetRecipe

    parser = build_parser()
    for recipe in (MobileFaceNetRecipe, IResNetRecipe, FaceTransformerRecipe):
        config = train_config(parser.parse_args(["recognizer", "train", "--architecture", recipe.architecture,
                                                 "--data", "d", "--output-dir", "o"]))
        assert config == recipe(data="d", output_dir="o")
    config = train_config(parser.parse_args(["recognizer", "train", "--architecture", "face-transformer",
                                             "--data", "d", "--output-dir", "o"]))
    assert (config.epochs, config.learning_rate, config.weight_decay, config.batch_size) == (30, 1e-3, 0.05, 64)
    assert config.test_fraction == FaceDataConfig(root="d").test_fraction and config.min_images == 2
    given = train_config(parser.parse_args([
        "recognizer", "train", "--architecture", "mobilefacenet", "--data", "faces", "--output-dir", "m", "--head",
        "cosface", "--margin", "0.2", "--resolution", "32", "--align", "box", "--epochs", "3", "--weight-decay", "0.01",
        "--fallback-box", "0.5", "--learning-rate", "0.05", "--no-progress"]))
    assert given == MobileFaceNetRecipe(data="faces", output_dir="m", head="cosface", margin=0.2, resolution=32,
                                        align="box", epochs=3, weight_decay=0.01, fallback_box=0.5,
                                        learning_rate=0.05, progress=False)


@pytest.mark.parametrize("argv, error, message", [
    (["--architecture", "mobilefacenet", "--preset", "cpu-tiny"], ConfigError,
     "--preset: not an option of --architecture mobilefacenet"),
    (["--architecture", "face-transformer", "--head", "cosface", "--width", "0.5"], ConfigError,
     "--head, --width: not an option of --architecture face-transformer"),
    (["--architecture", "mobilefacenet", "--distill-max-images", "0"], ConfigError,
     "--distill-max-images: not an option of --architecture mob"),
    (["--architecture", "face-transformer", "--upsample", "1"], ConfigError,
     "--upsample: not an option of --architecture face-transformer"),
    (["--architecture", "face-transformer", "--align", "box"], ConfigError,
     "align 'box': architecture 'face-transformer' aligns with dlib or resize"),
    (["--architecture", "mobilefacenet", "--align", "resize"], ConfigError,
     "align 'resize': architecture 'mobilefacenet' aligns with dlib or box"),
])
def test_options_of_another_architecture_are_refused(argv, error, message):
    with pytest.raises(error, match=message):
        train_config(build_parser().parse_args(["recognizer", "train", "--data", "d", "--output-dir", "o", *argv]))


def _random_faces(root, people=3, per_person=4, size=(24, 20)):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        for i in range(per_person):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / f"p{p}" / f"{i}.png")


def _train_both(capsys, tmp_path, argv, recipe):
    """Run the command line (``OUT`` → a folder) and the library's ``train`` on ``recipe`` with the
    same options (into another folder): their folders and the command's output."""
    from idgen.recognition import train

    command, library = tmp_path / "command", tmp_path / "library"
    assert main([str(command) if a == "OUT" else a for a in argv]) == 0
    printed = capsys.readouterr().out.replace(str(command), "OUT")
    from dataclasses import replace

    train(replace(recipe, output_dir=str(library)))
    return command, library, printed


def _same_weights(a, b):
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


def test_the_command_trains_the_library_recipes_mobilefacenet(tmp_path, capsys):
    from idgen.recognition import MobileFaceNetRecipe

    _random_faces(tmp_path / "faces")
    argv = ["recognizer", "train", "--architecture", "mobilefacenet", "--data", str(tmp_path / "faces"),
            "--output-dir", "OUT", "--align", "box", "--resolution", "32", "--width", "0.25", "--embedding-size", "16",
            "--epochs", "2", "--batch-size", "4", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    recipe = MobileFaceNetRecipe(data=str(tmp_path / "faces"), align="box", resolution=32, width=0.25,
                                 embedding_size=16, epochs=2, batch_size=4, progress=False,
                                 cache_dir=str(tmp_path / "cache"))
    command, library, printed = _train_both(capsys, tmp_path, argv, recipe)
    assert _same_weights(command, library)
    configs = [json.loads((folder / "config.json").read_text()) for folder in (command, library)]
    for config in configs:
        config["train"].pop("output_dir")
    assert configs[0] == configs[1] and configs[0]["summary"]["identities"] == 3
    assert configs[0]["architecture"] == "mobilefacenet" and "saved OUT/model.safetensors" in printed


def test_the_command_trains_the_library_recipes_face_transformer(tmp_path, capsys):
    from idgen.recognition import FaceTransformerRecipe

    _random_faces(tmp_path / "faces", per_person=5)
    argv = ["recognizer", "train", "--architecture", "face-transformer", "--data", str(tmp_path / "faces"),
            "--resolution", "16", "--output-dir", "OUT", "--preset", "cpu-tiny", "--align", "resize", "--epochs", "2",
            "--cache-dir", str(tmp_path / "cache")]
    recipe = FaceTransformerRecipe(data=str(tmp_path / "faces"), resolution=16, preset="cpu-tiny", align="resize",
                                   epochs=2, cache_dir=str(tmp_path / "cache"))
    command, library, printed = _train_both(capsys, tmp_path, argv, recipe)
    assert _same_weights(command, library)
    configs = [json.loads((folder / "config.json").read_text()) for folder in (command, library)]
    for config in configs:
        config["train"].pop("output_dir"), config["summary"].pop("wall_seconds")
    assert configs[0] == configs[1] and configs[0]["architecture"] == "face-transformer"
    assert "; test accuracy " in printed and "saved OUT/model.safetensors, config.json" in printed


@pytest.fixture
def two_people(tmp_path, faces_dir):
    """The vendored LFW photos as a two-identity ImageFolder."""
    root = tmp_path / "faces"
    for k, photo in enumerate(sorted(faces_dir.iterdir())):
        (root / f"id{k % 2:06d}").mkdir(parents=True, exist_ok=True)
        Image.open(photo).convert("RGB").save(root / f"id{k % 2:06d}" / f"{k // 2}.jpg", quality=95)
    return root


@pytest.mark.parametrize("architecture, network, options, model, train", [
    ("iresnet", "IResNet", ["--depth", "18", "--head", "adaface", "--width", "0.125", "--epochs", "3"],
     {"depth": 18, "embedding_size": 16, "width": 0.125, "resolution": 32, "dropout": 0.0},
     {"depth": 18, "head": "adaface", "scale": 64.0, "epochs": 3}),
    ("edgeface", "EdgeFace", ["--variant", "xxs", "--head", "cosface", "--epochs", "2"],
     {"variant": "xxs", "embedding_size": 16, "resolution": 32},
     {"variant": "xxs", "head": "cosface", "scale": 64.0, "epochs": 2}),
])
def test_a_trained_folder_reloads_with_the_embeddings_training_ended_with(architecture, network, options, model,
                                                                           train, two_people, tmp_path, monkeypatch, capsys):
    """A tiny network, a few steps; the in-memory network at the end of training and the folder loaded
    back (as `idgen.faces` does, hence `idgen eval verify --recognizer <folder>`) give the same embeddings."""
    import idgen.models
    import idgen.recognition.trainer as trainer
    from idgen.faces import FaceAnalyzer
    from idgen.models import to_tensor
    from idgen.recognition import TrainedRecognizer, align_images, read_face_set

    trained = {}
    save = trainer.save_recognizer

    def keep(folder, architecture, network, *args, **kwargs):
        trained["network"] = network
        return save(folder, architecture, network, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_recognizer", keep)
    out = tmp_path / architecture
    assert main(["recognizer", "train", "--architecture", architecture, *options, "--data", str(two_people),
                 "--output-dir", str(out), "--align", "box", "--fallback-box", "0.5", "--resolution", "32",
                 "--embedding-size", "16", "--batch-size", "4", "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\nsaved")[0])
    assert (summary["images"], summary["identities"], summary["steps"]) == (5, 2, train["epochs"])
    assert math.isfinite(summary["final_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == architecture and config["model"] == model
    assert {key: config["train"][key] for key in train} == train

    recognizer = TrainedRecognizer(out)
    assert recognizer.architecture == architecture and isinstance(recognizer.model, getattr(idgen.models, network))
    crops = align_images(read_face_set(two_people).images, 32, "box", 0.5, progress=False)
    with torch.no_grad():
        expected = trained["network"].eval()(to_tensor(crops)).numpy()
    assert np.allclose(recognizer.embed(crops), expected, atol=1e-6)
    if importlib.util.find_spec("dlib"):
        assert isinstance(FaceAnalyzer.from_backend("dlib", str(out)).recognizer, TrainedRecognizer)
