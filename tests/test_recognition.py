"""Face Transformer recogniser: margin heads vs independent formulas, the face-folder split, and the
``idgen train-recognizer`` command on a tiny synthetic folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.cli import main
from idgen.errors import ConfigError
from idgen.recognition import FaceDataConfig, FaceRecognizer, MarginHead, load_face_folder, model_config


def test_cosface_and_arcface_margins_match_formulas():
    torch.manual_seed(0)
    emb, labels = torch.randn(3, 4), torch.tensor([0, 2, 1])
    for kind in ("cosface", "arcface"):
        head = MarginHead(4, 3, kind, scale=10.0, margin=0.3)
        cos = (torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T).detach()
        logits = head(emb, labels).detach()
        for i, y in enumerate(labels.tolist()):
            c = float(cos[i, y])
            expected = c - 0.3 if kind == "cosface" else math.cos(math.acos(c) + 0.3)
            assert float(logits[i, y]) == pytest.approx(10 * expected, abs=1e-4)
            others = [j for j in range(3) if j != y]
            assert torch.allclose(logits[i, others], 10 * cos[i, others], atol=1e-5)
        assert torch.allclose(head(emb), 10 * cos, atol=1e-5)   # test time: no margin


def test_presets_and_bad_sizes():
    assert model_config("paper").dim == 512 and model_config("paper").depth == 6
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        model_config("cpu-tiny", image_size=30)
    with pytest.raises(ConfigError, match="unknown model preset"):
        model_config("huge")


def _write_folder(root, people=3, per_person=5):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        for i in range(per_person):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"p{p}" / f"{i}.png")


def test_face_folder_split_is_fixed_per_identity(tmp_path):
    _write_folder(tmp_path / "faces")
    config = FaceDataConfig(root=str(tmp_path / "faces"), align="resize", image_size=16, test_fraction=0.4,
                            max_train=2, cache_dir=str(tmp_path / "cache"))
    train, test = load_face_folder(config)
    assert train.images.shape == (6, 3, 16, 16) and test.images.shape == (6, 3, 16, 16)
    assert test.files[:2] == ["p0/3.png", "p0/4.png"] and train.files[:2] == ["p0/0.png", "p0/1.png"]
    again, _ = load_face_folder(config)                      # from the cache: identical
    assert torch.equal(again.images, train.images) and len(list((tmp_path / "cache").iterdir())) == 1


def test_train_recognizer_command(tmp_path, capsys):
    _write_folder(tmp_path / "faces")
    code = main(["train-recognizer", str(tmp_path / "faces"), "--out", str(tmp_path / "model"),
                 "--preset", "cpu-tiny", "--image-size", "16", "--align", "resize", "--epochs", "1",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    model = FaceRecognizer.from_pretrained(tmp_path / "model")
    assert model.config.num_classes == 3 and model.class_names == ["p0", "p1", "p2"]
