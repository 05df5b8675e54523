"""The shipped MobileFaceNet ONNX export loaded into idgen's torch MobileFaceNet (``variant="foamliu"``,
:func:`idgen.models.mobilefacenet.from_onnx`): the same embeddings as onnxruntime to 1e-4 on faces that
idgen's own analysis aligned (the vendored photos; slow: 60 LFW people), and a clear error for a file
that is not that network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from idgen.errors import DataError, ModelFilesMissingError
from idgen.faces.model_files import MOBILEFACENET_ONNX
from idgen.models import MobileFaceNet
from idgen.models.mobilefacenet import from_onnx

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def analyzer():
    pytest.importorskip("dlib")
    from idgen.faces import FaceAnalyzer

    return FaceAnalyzer.from_backend("dlib", "mobilefacenet")


@pytest.fixture(scope="module")
def network():
    return from_onnx(MOBILEFACENET_ONNX)


def largest_difference(analyzer, network, photos: list[Path]) -> float:
    """The largest absolute difference between onnxruntime's and the torch module's raw embeddings of the
    faces idgen aligns in ``photos`` (the largest face of each photo where dlib finds one; the
    embeddings' entries reach about ±3)."""
    found = [analyzer.detect(path) for path in photos]
    crops = np.stack([faces[0].aligned for faces in found if faces])
    assert len(crops) >= 0.9 * len(photos)
    expected = analyzer.recognizer.embed(crops)
    pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    mean, std = torch.from_numpy(analyzer.recognizer.mean), torch.from_numpy(analyzer.recognizer.std)
    with torch.no_grad():
        got = network((pixels - mean) / std).numpy()
    assert np.abs(expected).max() > 0.5   # real embeddings, not zeros
    return float(np.abs(got - expected).max())


def test_the_converted_network_embeds_the_vendored_faces_like_onnx(analyzer, network, faces_dir):
    assert network.config == {"embedding_size": 128, "width": 1.0, "resolution": 112, "variant": "foamliu"}
    assert not network.training
    assert largest_difference(analyzer, network, sorted(faces_dir.glob("*.jpg"))) <= 1e-4


@pytest.mark.slow
def test_the_converted_network_embeds_lfw_faces_like_onnx(analyzer, network, lfw_dir):
    people = sorted(p for p in (lfw_dir / "images").iterdir() if p.is_dir())[::95][:60]
    assert len(people) == 60
    assert largest_difference(analyzer, network, [sorted(p.glob("*.jpg"))[0] for p in people]) <= 1e-4


def test_the_variants_differ_only_in_activations_and_the_second_layer():
    paper, foamliu = MobileFaceNet(), MobileFaceNet(variant="foamliu")
    assert sum(p.numel() for p in paper.parameters()) == 1_003_136
    assert sum(p.numel() for p in foamliu.parameters()) == 999_808   # no PReLU slopes, one 64×64 pointwise more
    assert not any(isinstance(m, torch.nn.PReLU) for m in foamliu.modules())
    assert foamliu.eval()(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    with pytest.raises(ValueError, match="variant must be one of"):
        MobileFaceNet(variant="mobilenet")


def test_a_file_that_is_not_the_network_is_a_clear_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    with pytest.raises(ModelFilesMissingError, match="no such file"):
        from_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="junk.onnx: not an ONNX model"):
        from_onnx(tmp_path / "junk.onnx")
    # a valid ONNX graph of one convolution
    weight = numpy_helper.from_array(np.zeros((64, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(64, np.float32), "b")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
                              "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 56, 56])], [weight, bias])
    onnx.save(helper.make_model(graph), str(tmp_path / "one_conv.onnx"))
    with pytest.raises(DataError, match="one_conv.onnx: not the foamliu MobileFaceNet export"):
        from_onnx(tmp_path / "one_conv.onnx")
