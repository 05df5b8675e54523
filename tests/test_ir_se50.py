"""facexlib's IR-SE50 (the recogniser InfiniteYou conditions on): the architecture in the published
checkpoint's tensor names, a state dict written in those names loading and embedding through
``ir_se50:PATH``, wrong files refused by name, and InfiniteYou's preprocessing (insightface's
``norm_crop`` of the BGR image, scaled to [-1, 1]) pinned against insightface's own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from idgen.errors import DataError, ModelFilesMissingError
from idgen.faces import FaceAnalyzer, load_image
from idgen.models import IRSE, load_ir_se
from tiny_models import TINY_IR_SE, ir_se_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    state = ir_se_state_dict(**TINY_IR_SE)
    path = tmp_path / "recognition_arcface_ir_se50.pth"
    torch.save(state, path)
    return path, state


def test_ir_se50_has_the_published_tensor_names_and_size():
    """IR-SE50 on the meta device holds exactly the tensors facexlib's layer description names (43.8 M
    parameters, those of the published 174 MB file)."""
    with torch.device("meta"):
        model = IRSE()
        published = ir_se_state_dict((3, 4, 14, 3), (64, 128, 256, 512))
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == {name: tuple(t.shape) for name, t in published.items()}
    assert sum(p.numel() for p in model.parameters()) == 43_797_696
    assert shapes["body.23.res_layer.5.fc2.weight"] == (512, 32, 1, 1) and "body.24.res_layer.0.weight" not in shapes
    assert "body.0.shortcut_layer.0.weight" not in shapes and shapes["body.3.shortcut_layer.0.weight"] == (128, 64, 1, 1)


def test_a_state_dict_in_the_published_names_loads_and_embeds(tiny_checkpoint, faces_dir):
    path, state = tiny_checkpoint
    model = load_ir_se(path)
    assert model.config == {**TINY_IR_SE, "embedding_size": 512, "resolution": 112}
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in state.items())
    analyzer = FaceAnalyzer.from_backend("dlib", f"ir_se50:{path}")
    photos = sorted(faces_dir.glob("Aaron_Peirsol_000*.jpg"))[:2] + [faces_dir / "Angelina_Jolie_0001.jpg"]
    embeddings = np.stack([analyzer.get_face(p).embedding for p in photos])
    assert embeddings.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[2], atol=1e-3)
    again = FaceAnalyzer.from_backend("dlib", f"ir_se50:{path}").get_face(photos[0]).embedding
    np.testing.assert_array_equal(again, embeddings[0])


def test_checkpoints_without_batch_counters_load(tmp_path):
    """Checkpoints saved before PyTorch 0.4.1 have no ``num_batches_tracked``."""
    path = tmp_path / "old.pth"
    torch.save(ir_se_state_dict(**TINY_IR_SE, tracked=False), path)
    assert load_ir_se(path).config["units"] == TINY_IR_SE["units"]


def test_the_network_sees_insightfaces_bgr_norm_crop_in_minus_one_to_one(tiny_checkpoint, faces_dir):
    """What InfiniteYou feeds the recogniser: ``norm_crop(bgr_image, kps, 112)`` / 255 · 2 − 1, BGR."""
    face_align = pytest.importorskip("insightface.utils.face_align")
    path, _ = tiny_checkpoint
    analyzer = FaceAnalyzer.from_backend("dlib", f"ir_se50:{path}")
    seen = []
    network = analyzer.recognizer.model
    network.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    face = analyzer.get_face(photo)
    bgr = np.ascontiguousarray(load_image(photo)[..., ::-1])
    reference = face_align.norm_crop(bgr, landmark=face.landmarks.astype(np.float32), image_size=112)
    expected = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 255.0 * 2 - 1
    assert seen[0].shape == (1, 3, 112, 112)
    # the warp may round a few pixels the other way (float64 vs skimage's transform): one grey level at most
    assert (seen[0] - expected).abs().max() <= 2 / 255 + 1e-6
    assert (seen[0] - expected).abs().mean() < 1e-3
    with torch.no_grad():
        np.testing.assert_allclose(face.embedding, network(expected)[0].numpy(), atol=2e-3)


def test_wrong_files_are_refused_naming_them(tmp_path, tiny_checkpoint):
    _, state = tiny_checkpoint
    renamed = dict(state)
    renamed["body.1.res_layer.3.weights"] = renamed.pop("body.1.res_layer.3.weight")
    missing = {k: v for k, v in state.items() if k != "output_layer.4.running_var"}
    shaped = {**state, "body.2.res_layer.5.fc1.weight": torch.zeros(3, 48, 1, 1)}
    no_unit = {k: v for k, v in state.items() if not k.startswith("body.1.")}
    cases = {"renamed": (renamed, "missing body.1.res_layer.3.weight; unexpected body.1.res_layer.3.weights"),
             "missing": (missing, "missing output_layer.4.running_var"),
             "shaped": (shaped, "wrong shape body.2.res_layer.5.fc1.weight"),
             "no_unit": (no_unit, "body units are \\[0, 2, 3, 4\\]"),
             "nested": ({"state_dict": state}, "not a state dict of tensors")}
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(content, path)
        with pytest.raises(DataError, match=f"{path}: .*{message}.*recognition_arcface_ir_se50.pth"):
            FaceAnalyzer.from_backend("dlib", f"ir_se50:{path}")
    nan = {**state, "output_layer.3.bias": torch.full((512,), float("nan"))}
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(DataError, match="nan.pth: NaN or infinite values in output_layer.3.bias"):
        load_ir_se(tmp_path / "nan.pth")
    with pytest.raises(ModelFilesMissingError, match="absent.pth: no such file; .*facexlib/releases"):
        FaceAnalyzer.from_backend("dlib", f"ir_se50:{tmp_path / 'absent.pth'}")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DataError, match="evil.pth: cannot be read .*weights_only=True"):
        load_ir_se(path)


def test_a_file_name_is_looked_up_in_the_insightface_pack(tmp_path, tiny_checkpoint, monkeypatch):
    """``ir_se50:NAME`` with an insightface detector reads NAME in the pack's folder (as ``arcface.onnx``)."""
    from idgen.faces import analyzer as analyzer_module

    path, _ = tiny_checkpoint
    pack = tmp_path / "root" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    (pack / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(analyzer_module, "InsightFaceDetector", lambda *args, **kwargs: "detector")
    analyzer = FaceAnalyzer.from_backend("antelopev2", f"ir_se50:{path.name}", root=tmp_path / "root")
    assert analyzer.recognizer.path == pack / path.name and analyzer.recognizer.embedding_size == 512
