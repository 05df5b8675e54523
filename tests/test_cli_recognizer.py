"""`idgen recognizer train --architecture …` and its old names: `idgen fr train` (MobileFaceNet) and
`idgen train-recognizer` (Face Transformer) make the same request, train the same weights and say
which command they stand for; options of the other backbone are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from idgen.cli import build_parser, main
from idgen.cli.recognizer import train_options
from idgen.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [
    (["fr", "train", "--data", "faces", "--out", "m"],
     ["recognizer", "train", "--arch", "mobilefacenet", "--data", "faces", "--out", "m"]),
    (["fr", "train", "--data", "faces", "--out", "m", "--head", "cosface", "--margin", "0.2", "--input-size", "32",
      "--align", "box", "--epochs", "3", "--weight-decay", "0.01", "--no-progress"],
     ["recognizer", "train", "--arch", "mobilefacenet", "--data", "faces", "--out", "m", "--head", "cosface",
      "--margin", "0.2", "--input-size", "32", "--align", "box", "--epochs", "3", "--weight-decay", "0.01",
      "--no-progress"]),
    (["train-recognizer", "faces", "--out", "m"],
     ["recognizer", "train", "--arch", "face-transformer", "--data", "faces", "--out", "m"]),
    (["train-recognizer", "faces", "--out", "m", "--image-size", "16", "--align", "resize", "--preset", "cpu-tiny",
      "--max-train", "3", "--distill-from", "mobilefacenet:t.onnx", "--distill-max-images", "5"],
     ["recognizer", "train", "--arch", "face-transformer", "--data", "faces", "--out", "m", "--input-size", "16",
      "--align", "resize", "--preset", "cpu-tiny", "--max-train", "3", "--distill-from", "mobilefacenet:t.onnx",
      "--distill-max-images", "5"]),
]


@pytest.mark.parametrize("old, new", PAIRS, ids=lambda argv: " ".join(argv[:2]))
def test_old_and_new_names_make_the_same_request(old, new):
    parser = build_parser()
    assert train_options(parser.parse_args(old)) == train_options(parser.parse_args(new))


def test_the_defaults_are_each_backbones_own():
    from idgen.recognition import FaceDataConfig, RecognizerTrainConfig, TrainConfig
    from idgen.recognition import MobileFaceNetTrainConfig as MobileConfig

    parser = build_parser()
    arch, options = train_options(parser.parse_args(["recognizer", "train", "--arch", "mobilefacenet",
                                                     "--data", "d", "--out", "o"]))
    assert arch == "mobilefacenet" and MobileConfig(**options) == MobileConfig(data="d", output="o")
    arch, options = train_options(parser.parse_args(["recognizer", "train", "--arch", "face-transformer",
                                                     "--data", "d", "--out", "o"]))
    trainer = RecognizerTrainConfig(backbone="face-transformer")
    assert TrainConfig() == trainer          # the old name of the Face Transformer's config
    assert arch == "face-transformer" and RecognizerTrainConfig(**options, backbone=arch) == RecognizerTrainConfig(
        data="d", output="o", backbone="face-transformer")
    assert (options["epochs"], options["learning_rate"], options["weight_decay"], options["batch_size"]) == (
        trainer.epochs, trainer.learning_rate, trainer.weight_decay, trainer.batch_size)
    assert options["test_fraction"] == FaceDataConfig(root="d").test_fraction and options["min_images"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--arch", "mobilefacenet", "--preset", "cpu-tiny"], "--preset: not an option of --architecture mobilefacenet"),
    (["--arch", "face-transformer", "--head", "cosface", "--width", "0.5"],
     "--head, --width: not an option of --architecture face-transformer"),
    (["--arch", "mobilefacenet", "--distill-max-images", "0"], "--distill-max-images: not an option of --architecture mob"),
    (["--arch", "face-transformer", "--upsample", "1"], "--upsample: not an option of --architecture face-transformer"),
    (["--arch", "face-transformer", "--align", "box"], "--align box: --architecture face-transformer aligns with dlib or resize"),
    (["--arch", "mobilefacenet", "--align", "resize"], "--align resize: --architecture mobilefacenet aligns with dlib or box"),
])
def test_options_of_the_other_backbone_are_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        train_options(build_parser().parse_args(["recognizer", "train", "--data", "d", "--out", "o", *argv]))


def _random_faces(root, people=3, per_person=4, size=(24, 20)):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        for i in range(per_person):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / f"p{p}" / f"{i}.png")


def _train_both(capsys, tmp_path, old, new):
    """Run the old and the new command line (``OUT`` → a folder each); their outputs and messages."""
    runs = {}
    for name, argv in (("old", old), ("new", new)):
        out = tmp_path / name
        assert main([str(out) if a == "OUT" else a for a in argv]) == 0
        captured = capsys.readouterr()
        runs[name] = out, captured.out.replace(str(out), "OUT"), captured.err
    return runs


def _same_weights(a, b):
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


def test_both_names_train_the_same_mobilefacenet(tmp_path, capsys):
    _random_faces(tmp_path / "faces")
    flags = ["--data", str(tmp_path / "faces"), "--out", "OUT", "--align", "box", "--input-size", "32", "--width",
             "0.25", "--embedding-size", "16", "--epochs", "2", "--batch-size", "4", "--no-progress",
             "--cache-dir", str(tmp_path / "cache")]
    runs = _train_both(capsys, tmp_path, ["fr", "train", *flags],
                       ["recognizer", "train", "--arch", "mobilefacenet", *flags])
    (old, old_out, old_err), (new, new_out, new_err) = runs["old"], runs["new"]
    assert _same_weights(old, new)
    configs = [json.loads((folder / "config.json").read_text()) for folder in (old, new)]
    for config in configs:
        config["train"].pop("output")
    assert configs[0] == configs[1] and configs[0]["summary"]["identities"] == 3
    assert old_out == new_out and "saved OUT/model.safetensors" in new_out
    assert "idgen: note: `idgen fr train` is an old name of `idgen recognizer train --architecture mobilefacenet`" in old_err
    assert "note" not in new_err


def test_both_names_train_the_same_face_transformer(tmp_path, capsys):
    _random_faces(tmp_path / "faces", per_person=5)
    common = ["--out", "OUT", "--preset", "cpu-tiny", "--align", "resize", "--epochs", "2",
              "--cache-dir", str(tmp_path / "cache")]
    runs = _train_both(capsys, tmp_path, ["train-recognizer", str(tmp_path / "faces"), "--image-size", "16", *common],
                       ["recognizer", "train", "--arch", "face-transformer", "--data", str(tmp_path / "faces"),
                        "--input-size", "16", *common])
    (old, old_out, old_err), (new, new_out, new_err) = runs["old"], runs["new"]
    assert _same_weights(old, new)
    configs = [json.loads((folder / "config.json").read_text()) for folder in (old, new)]
    for config in configs:
        config["train"].pop("output"), config["summary"].pop("wall_seconds")
    assert configs[0] == configs[1] and configs[0]["architecture"] == "face-transformer"
    accuracy = [out.split("; test accuracy ")[1] for out in (old_out, new_out)]
    assert accuracy[0] == accuracy[1] and "saved OUT/model.safetensors, config.json" in new_out
    assert ("idgen: note: `idgen train-recognizer FOLDER` is an old name of `idgen recognizer train --architecture "
            "face-transformer --data FOLDER`") in old_err
    assert "note" not in new_err
