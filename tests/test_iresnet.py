"""IResNet and AdaFace: IR-50 on the meta device against the parameter count worked out
from the layer description and insightface's tensor names, arcface_torch ``backbone.pth`` files loaded
(and wrong ones refused by name), the AdaFace head against the paper's formulas written out here, and
`idgen recognizer train --architecture iresnet` training a tiny IResNet whose folder reloads as an
`idgen.faces` recogniser with the same embeddings."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from idgen.errors import ConfigError, DataError
from idgen.models import AdaFaceHead, IResNet, MarginHead, MobileFaceNet, load_insightface_iresnet, margin_head

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the architecture -----------------------------------------------------------------------------

def iresnet_parameters(layers, embedding=512, side=7):
    """Parameters of an IResNet worked out from the layer description: a conv 3×3 (3 → 64, no bias),
    BN (weight + bias) and PReLU (one slope per channel) stem; per block BN(in), conv 3×3 in → out,
    BN(out), PReLU(out), conv 3×3 out → out, BN(out), and in the first block of each stage a conv 1×1
    in → out + BN(out); then BN2d(512), Linear(512·side² → embedding, with bias), BatchNorm1d(embedding)."""
    total = 3 * 64 * 9 + 2 * 64 + 64
    cin = 64
    for cout, blocks in zip((64, 128, 256, 512), layers):
        for block in range(blocks):
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout + cout * cout * 9 + 2 * cout
            if block == 0:
                total += cin * cout + 2 * cout
            cin = cout
    return total + 2 * 512 + 512 * side * side * embedding + embedding + 2 * embedding


def test_ir50_on_the_meta_device_has_the_published_size_and_tensor_names():
    """IR-50, 512-d at 112 px: 43,590,848 parameters (insightface's "43.6 M"), in the tensor names of an
    arcface_torch backbone.pth."""
    assert iresnet_parameters((3, 4, 14, 3)) == 43_590_848
    with torch.device("meta"):
        model = IResNet(50)
    assert sum(p.numel() for p in model.parameters()) == 43_590_848
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 3, 3) and shapes["prelu.weight"] == (64,)
    assert shapes["layer1.0.bn1.weight"] == (64,) and shapes["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1) and shapes["layer1.0.downsample.1.running_var"] == (64,)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1) and shapes["layer2.0.prelu.weight"] == (128,)
    assert shapes["layer3.13.conv2.weight"] == (256, 256, 3, 3) and "layer3.14.conv1.weight" not in shapes
    assert shapes["layer4.2.bn3.bias"] == (512,) and "layer4.1.downsample.0.weight" not in shapes
    assert shapes["bn2.weight"] == (512,) and shapes["fc.weight"] == (512, 512 * 7 * 7) and shapes["fc.bias"] == (512,)
    assert shapes["features.running_mean"] == (512,) and not model.features.weight.requires_grad
    block = {name.split(".", 2)[2] for name in shapes if name.startswith("layer1.0.")}
    assert block == {f"{bn}.{stat}" for bn in ("bn1", "bn2", "bn3", "downsample.1")
                     for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")} | {
        "conv1.weight", "prelu.weight", "conv2.weight", "downsample.0.weight"}
    top = {name.split(".")[0] for name in shapes}
    assert top == {"conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2", "fc", "features"}


@pytest.mark.parametrize("depth, layers", [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)), (100, (3, 13, 30, 3))])
def test_other_depths_have_the_parameters_of_their_layers(depth, layers):
    with torch.device("meta"):
        model = IResNet(depth)
    assert sum(p.numel() for p in model.parameters()) == iresnet_parameters(layers)


def test_a_tiny_iresnet_runs_on_small_crops():
    model = IResNet(18, embedding_size=16, width=0.125, resolution=32).eval()
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 16)
    assert model.fc.in_features == 64 * 2 * 2   # 512 · 0.125 channels on a 2×2 map
    with pytest.raises(ValueError, match="multiple of 16"):
        IResNet(18, resolution=40)
    with pytest.raises(ValueError, match="depth must be one of"):
        IResNet(26)


# --- arcface_torch checkpoints -------------------------------------------------------------------

def _tiny(seed=0):
    torch.manual_seed(seed)
    model = IResNet(18, embedding_size=16, width=0.125, resolution=32)
    with torch.no_grad():   # running statistics that are not the defaults, so loading them matters
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_a_backbone_pth_loads_with_its_sizes_and_gives_the_same_embeddings(tmp_path):
    model, images = _tiny(), torch.rand(4, 3, 32, 32) * 2 - 1
    state = model.state_dict()
    variants = {
        "backbone.pth": state,
        "no-counters.pth": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
        "ddp.pth": {f"module.{k}": v for k, v in state.items()},
        "checkpoint_gpu_0.pt": {"epoch": 3, "state_dict_backbone": state},
    }
    with torch.no_grad():
        expected = model(images)
        for name, saved in variants.items():
            torch.save(saved, tmp_path / name)
            loaded = load_insightface_iresnet(tmp_path / name)
            assert loaded.config == {"depth": 18, "embedding_size": 16, "width": 0.125, "resolution": 32,
                                     "dropout": 0.0}, name
            assert torch.equal(loaded.eval()(images), expected), name


def test_a_file_that_is_not_an_iresnet_backbone_is_refused_by_name(tmp_path):
    state = _tiny().state_dict()
    cases = {
        "renamed.pth": ({("layer2.0.conv9.weight" if k == "layer2.0.conv1.weight" else k): v for k, v in state.items()},
                        r"renamed.pth: not an insightface IResNet-18 backbone: missing layer2.0.conv1.weight; "
                        r"unexpected layer2.0.conv9.weight"),
        "shape.pth": ({**state, "layer1.0.prelu.weight": torch.zeros(3)}, r"shape.pth: .*wrong shape layer1.0.prelu"),
        "depth.pth": ({k: v for k, v in state.items() if not k.startswith("layer3.1.")},
                      r"depth.pth: \(2, 2, 1, 2\) blocks per stage match no IResNet depth"),
        "mobilefacenet.pth": (MobileFaceNet(16, 0.25, 32).state_dict(), r"mobilefacenet.pth: no conv1.weight / fc.weight"),
        "list.pth": ([1, 2, 3], r"list.pth: not a state dict of tensors"),
    }
    for name, (saved, message) in cases.items():
        torch.save(saved, tmp_path / name)
        with pytest.raises(DataError, match=message):
            load_insightface_iresnet(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.pth: no such file"):
        load_insightface_iresnet(tmp_path / "missing.pth")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(DataError, match=r"evil.pth: cannot be read as a PyTorch weights file with weights_only=True"):
        load_insightface_iresnet(tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_backbone_pth_is_a_face_analysis_recogniser(tmp_path, faces_dir):
    pytest.importorskip("dlib")
    from idgen.faces import FaceAnalyzer, align_face, load_image
    from idgen.models import to_tensor

    model = _tiny()
    torch.save(model.state_dict(), tmp_path / "backbone.pth")
    analyzer = FaceAnalyzer.from_backend("dlib", f"iresnet:{tmp_path / 'backbone.pth'}")
    photo = sorted(faces_dir.iterdir())[0]
    face = analyzer.get_face(photo)
    with torch.no_grad():
        expected = model(to_tensor(align_face(load_image(photo), face.landmarks, 32)[None]))[0].numpy()
    assert analyzer.recognizer.embedding_size == 16 and np.allclose(face.embedding, expected, atol=1e-5)


# --- AdaFace ------------------------------------------------------------------------------------

def adaface_reference(embeddings, centres, labels, mean, std, s=64.0, m=0.4, h=0.333, alpha=0.01, eps=1e-3):
    """AdaFace (Kim et al. 2022) written out with Python's math module: the running mean and (unbiased)
    standard deviation of the batch's feature norms are updated first (momentum alpha), then
    ẑ = clip(h·(‖z‖ − μ)/(σ + ε), −1, 1), g_angle = −m·ẑ, g_add = m·ẑ + m, and the true class's logit is
    s·(cos(clip(θ + g_angle, ε, π − ε)) − g_add); every cosine is first kept within ε of ±1 (the
    authors' code). Returns the logits and the new (mean, std)."""
    norms = [min(100.0, max(0.001, math.sqrt(sum(x * x for x in e)))) for e in embeddings]
    batch_mean = sum(norms) / len(norms)
    batch_std = math.sqrt(sum((n - batch_mean) ** 2 for n in norms) / (len(norms) - 1))
    mean, std = alpha * batch_mean + (1 - alpha) * mean, alpha * batch_std + (1 - alpha) * std
    logits = []
    for e, norm, label in zip(embeddings, norms, labels):
        z_hat = min(1.0, max(-1.0, h * (norm - mean) / (std + eps)))
        row = []
        for j, c in enumerate(centres):
            cos = sum(a * b for a, b in zip(e, c)) / norm_of(e) / norm_of(c)
            cos = min(1 - eps, max(-1 + eps, cos))
            if j == label:
                theta = min(math.pi - eps, max(eps, math.acos(cos) - m * z_hat))
                cos = math.cos(theta) - (m * z_hat + m)
            row.append(s * cos)
        logits.append(row)
    return np.array(logits), mean, std


def norm_of(v):
    return math.sqrt(sum(x * x for x in v))


def test_adaface_matches_the_papers_formulas_over_two_batches():
    torch.manual_seed(0)
    head = AdaFaceHead(8, 5).double()
    mean, std = 20.0, 100.0
    for step in range(2):
        # norms from 0.5 to 60: low- and high-quality images, some clipped ẑ (h·(‖z‖ − μ)/σ beyond ±1 after step 0)
        embeddings = torch.randn(7, 8, dtype=torch.float64)
        embeddings = embeddings / embeddings.norm(dim=1, keepdim=True) * torch.tensor(
            [0.5, 3.0, 10.0, 20.0, 35.0, 60.0, 1e-4], dtype=torch.float64)[:, None]
        if step == 1:
            embeddings[2] = 15.0 * head.weight[4].detach() / head.weight[4].detach().norm()  # θ = 0: ε-clipped
            head.batch_mean.fill_(10.0), head.batch_std.fill_(2.0)
            mean, std = 10.0, 2.0
        labels = torch.tensor([0, 3, 4, 1, 2, 4, 0])
        logits = head(embeddings, labels).detach().numpy()
        expected, mean, std = adaface_reference(embeddings.tolist(), head.weight.detach().tolist(), labels.tolist(),
                                                mean, std)
        assert np.allclose(logits, expected, atol=1e-5, rtol=0), step
        assert math.isclose(head.batch_mean.item(), mean, rel_tol=1e-12) and math.isclose(head.batch_std.item(), std, rel_tol=1e-12)
    cos = torch.nn.functional.normalize(embeddings) @ torch.nn.functional.normalize(head.weight).T
    assert torch.allclose(head(embeddings), 64.0 * cos)   # no labels: the test-time logits, statistics untouched
    head.eval()
    head(embeddings, labels)
    assert math.isclose(head.batch_mean.item(), mean, rel_tol=1e-12)   # evaluation mode leaves them too


def test_the_margin_heads_by_name():
    assert isinstance(margin_head("adaface", 8, 3, 64.0), AdaFaceHead) and margin_head("adaface", 8, 3, 64.0).margin == 0.4
    arc = margin_head("arcface", 8, 3, 32.0)
    assert type(arc) is MarginHead and (arc.kind, arc.margin) == ("arcface", 0.5)
    assert margin_head("cosface", 8, 3, 32.0, 0.2).margin == 0.2
    with pytest.raises(ValueError, match="unknown margin head 'sphereface'"):
        margin_head("sphereface", 8, 3, 32.0)


# --- training through the command line ----------------------------------------------------------------

def test_the_iresnet_options_and_defaults():
    from idgen.cli import build_parser
    from idgen.cli.recognizer import train_config
    from idgen.recognition import IResNetRecipe

    parser = build_parser()
    config = train_config(parser.parse_args(["recognizer", "train", "--architecture", "iresnet", "--data", "d",
                                             "--output-dir", "o"]))
    assert config == IResNetRecipe(data="d", output_dir="o")
    assert (config.depth, config.embedding_size, config.scale, config.head, config.resolution) == (50, 512, 64.0,
                                                                                                   "arcface", 112)
    for argv, message in [
            (["--architecture", "mobilefacenet", "--depth", "18"], "--depth: not an option of --architecture mobilefacenet"),
            (["--architecture", "face-transformer", "--depth", "18"], "--depth: not an option of --architecture face-trans"),
            (["--architecture", "iresnet", "--preset", "cpu-tiny"], "--preset: not an option of --architecture iresnet"),
            (["--architecture", "iresnet", "--align", "resize"], "align 'resize': architecture 'iresnet' aligns with dlib")]:
        with pytest.raises(ConfigError, match=message):
            train_config(parser.parse_args(["recognizer", "train", "--data", "d", "--output-dir", "o", *argv]))
    with pytest.raises(SystemExit):
        parser.parse_args(["recognizer", "train", "--architecture", "iresnet", "--data", "d", "--output-dir", "o",
                           "--depth", "26"])
    with pytest.raises(SystemExit):
        parser.parse_args(["recognizer", "train", "--architecture", "resnet", "--data", "d", "--output-dir", "o"])
    with pytest.raises(ConfigError, match="IResNet depth 26"):
        IResNetRecipe(data="d", output_dir="o", depth=26)


def test_a_backbone_with_nan_weights_is_refused_by_name(tmp_path):
    state = _tiny().state_dict()
    state["fc.weight"][0, 0] = float("inf")
    torch.save(state, tmp_path / "diverged.pth")
    with pytest.raises(DataError, match=r"diverged.pth: NaN or infinite values in fc.weight"):
        load_insightface_iresnet(tmp_path / "diverged.pth")
