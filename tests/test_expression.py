"""SMIRK's expression encoder and crop (the Arc2Face Expression Adapter's photo input), and the
expression files idgen reads."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from idgen.errors import ConfigError, DataError, NoFaceError
from idgen.faces.expression import (ExpressionExtractor, crop, crop_box, load_smirk_encoder, mediapipe_landmarker,
                                    read_expressions)
from idgen.models.smirk import CHECKPOINT_PREFIX, SmirkExpressionEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encoder_has_the_published_tensor_names_and_shapes():
    """timm's tf_mobilenetv3_large_minimal_100 (features only) names, as SMIRK_em1.pt stores them."""
    state = SmirkExpressionEncoder().state_dict()
    expected = {"encoder.conv_stem.weight": (16, 3, 3, 3), "encoder.bn1.running_var": (16,),
                "encoder.blocks.0.0.conv_dw.weight": (16, 1, 3, 3), "encoder.blocks.0.0.conv_pw.weight": (16, 16, 1, 1),
                "encoder.blocks.1.0.conv_pw.weight": (64, 16, 1, 1), "encoder.blocks.1.1.conv_dw.weight": (72, 1, 3, 3),
                "encoder.blocks.2.2.conv_pwl.weight": (40, 120, 1, 1), "encoder.blocks.3.1.conv_pw.weight": (200, 80, 1, 1),
                "encoder.blocks.3.3.conv_pw.weight": (184, 80, 1, 1), "encoder.blocks.4.1.bn3.weight": (112,),
                "encoder.blocks.5.2.conv_dw.weight": (960, 1, 3, 3), "encoder.blocks.6.0.conv.weight": (960, 160, 1, 1),
                "encoder.blocks.6.0.bn1.num_batches_tracked": (), "expression_layers.0.weight": (55, 960)}
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(k.startswith("encoder.blocks.7") or "conv_head" in k for k in state)
    assert sum(k.endswith(".conv_pwl.weight") for k in state) == 14   # the inverted-residual blocks


def test_encoder_output_ranges_and_tf_same_padding():
    torch.manual_seed(0)
    encoder = SmirkExpressionEncoder().eval()
    with torch.no_grad():
        for p in encoder.expression_layers.parameters():
            p.mul_(50)
        features = encoder.encoder(torch.rand(1, 3, 224, 224))
        params = encoder(torch.rand(3, 3, 224, 224))
    assert features.shape == (1, 960, 7, 7)
    assert params.shape == (3, 55)
    assert params[:, 50:52].min() >= 0 and params[:, 50:52].max() <= 1 and params[:, 52].min() >= 0
    assert params[:, 53:].abs().max() <= 0.2 and params[:, :50].abs().max() > 1


def test_checkpoint_loads_its_encoder_tensors_and_refuses_others(tmp_path):
    torch.manual_seed(1)
    source = SmirkExpressionEncoder()
    checkpoint = {CHECKPOINT_PREFIX + k: v for k, v in source.state_dict().items()}
    checkpoint["smirk_encoder.shape_encoder.fc.weight"] = torch.zeros(3)   # the other SMIRK networks: ignored
    torch.save(checkpoint, tmp_path / "SMIRK_em1.pt")
    loaded = load_smirk_encoder(tmp_path / "SMIRK_em1.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    del checkpoint[CHECKPOINT_PREFIX + "expression_layers.0.weight"]
    torch.save(checkpoint, tmp_path / "broken.pt")
    with pytest.raises(DataError, match=r"broken\.pt.*missing expression_layers\.0\.weight"):
        load_smirk_encoder(tmp_path / "broken.pt")


def test_crop_is_the_square_around_the_landmarks_scaled_1_4():
    landmarks = np.array([[100.0, 50.0], [200.0, 150.0]])
    left, top, side = crop_box(landmarks)
    assert side == 140 and (left, top) == (80.0, 30.0)
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[30:170, 80:220] = 255          # exactly the crop: it fills the whole 224 × 224 input
    image = crop(rgb, landmarks)
    assert image.shape == (1, 3, 224, 224) and image[..., 2:-2, 2:-2].min() == 1.0


def test_extractor_reads_a_photo_and_names_a_photo_without_a_face(faces_dir):
    photo = sorted(faces_dir.iterdir())[0]
    encoder = SmirkExpressionEncoder().eval()
    found = ExpressionExtractor(encoder, lambda rgb: np.array([[40.0, 40.0], [120.0, 140.0]]))(photo)
    assert found.shape == (55,) and found.dtype == np.float32
    with pytest.raises(NoFaceError, match=photo.name):
        ExpressionExtractor(encoder, lambda rgb: None)(photo)


def test_expression_files(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(55, dtype=np.float64))
    (tmp_path / "two.json").write_text(json.dumps([[0.5] * 55, [1.0] * 55]))
    assert read_expressions(tmp_path / "one.npy").shape == (1, 55)
    assert np.array_equal(read_expressions(tmp_path / "two.json")[1], np.ones(55, np.float32))
    (tmp_path / "short.json").write_text(json.dumps([0.0] * 54))
    with pytest.raises(DataError, match=r"short\.json.*shape \(54,\).*55 FLAME parameters"):
        read_expressions(tmp_path / "short.json")
    (tmp_path / "words.json").write_text(json.dumps(["smile"]))
    with pytest.raises(DataError, match=r"words\.json"):
        read_expressions(tmp_path / "words.json")
    with pytest.raises(DataError, match=r"smile\.txt.*\.npy or \.json"):
        read_expressions(tmp_path / "smile.txt")


def test_the_mediapipe_landmarker_needs_its_package(tmp_path):
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed here; this checks the message given without it")
    with pytest.raises(ConfigError, match="pip install mediapipe"):
        mediapipe_landmarker(tmp_path / "face_landmarker.task")
