"""MobileFaceNet (Chen et al., 2018) in plain torch: a ~1 M-parameter face recogniser.

Inverted-residual bottlenecks as in MobileNetV2, then a global *depthwise* convolution over the
final feature map instead of global average pooling (it lets the network weigh the face centre
differently from the border), then a linear embedding. ``width`` scales every channel count and
``resolution`` may be any multiple of 16 (the global depthwise kernel follows it), so the same
class gives the full model (112 px, width 1) and tiny ones for CPU tests.

Two variants share the layout: ``"paper"`` (PReLU activations, the paper's; what idgen trains) and
``"foamliu"`` (ReLU6 activations and a depthwise-separable second layer, each half followed by a
ReLU: the network of the foamliu/MobileFaceNet project, whose ONNX export idgen ships).
:func:`from_onnx` loads that export into the ``"foamliu"`` variant, so the recogniser the mini model is
conditioned on runs in torch, with gradients.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import DataError, ModelFilesMissingError

VARIANTS = ("paper", "foamliu")


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: Optional[Callable[[int], nn.Module]] = None, padding: int | None = None) -> nn.Sequential:
    """Convolution (``same`` padding unless given), batch norm, then ``act(cout)`` when given."""
    padding = kernel // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, act: Callable[[int], nn.Module]):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, hidden, act=act),
                                  conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act),
                                  conv_bn(hidden, cout))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


# (expansion, output channels, repeats, first stride) of the paper's Table 1
STAGES = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]


def _relu6(_channels: int) -> nn.Module:
    return nn.ReLU6()


def _relu(_channels: int) -> nn.Module:
    return nn.ReLU()


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_size: int = 128, width: float = 1.0, resolution: int = 112, variant: str = "paper"):
        super().__init__()
        if resolution % 16:
            raise ValueError(f"resolution must be a multiple of 16, got {resolution}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.config = {"embedding_size": embedding_size, "width": width, "resolution": resolution, "variant": variant}
        c = lambda channels: max(8, int(channels * width))  # noqa: E731
        act = nn.PReLU if variant == "paper" else _relu6
        layers = [conv_bn(3, c(64), 3, 2, act=act)]
        if variant == "paper":
            layers.append(conv_bn(c(64), c(64), 3, 1, groups=c(64), act=act))
        else:  # depthwise-separable: depthwise 3×3, then pointwise 1×1, each with a plain ReLU
            layers += [conv_bn(c(64), c(64), 3, 1, groups=c(64), act=_relu), conv_bn(c(64), c(64), act=_relu)]
        cin = c(64)
        for expansion, cout, repeats, stride in STAGES:
            for i in range(repeats):
                layers.append(Bottleneck(cin, c(cout), stride if i == 0 else 1, expansion, act))
                cin = c(cout)
        layers.append(conv_bn(cin, c(512), act=act))
        side = resolution // 16
        layers.append(conv_bn(c(512), c(512), side, groups=c(512), padding=0))  # global depthwise conv
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(c(512), embedding_size, bias=False),
                                       nn.BatchNorm1d(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×S×S images normalised to about [-1, 1] (the ``"foamliu"`` variant: with ImageNet's mean
        and std, as its ONNX export takes them) -> N×embedding_size (not normalised)."""
        return self.embedding(self.features(x))


def _graph_layers(model: nn.Module) -> tuple[list[tuple[nn.Module, nn.Module]], list[str]]:
    """The (convolution or linear, batch norm) pairs of ``model`` in forward order, and the ONNX
    operator of each of its activations in order (ReLU6 exports as ``Clip``)."""
    pairs, activations, previous = [], [], None
    names = {nn.ReLU6: "Clip", nn.ReLU: "Relu", nn.PReLU: "PRelu"}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            previous = module
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            pairs.append((previous, module))
        elif type(module) in names:
            activations.append(names[type(module)])
    return pairs, activations


def from_onnx(path: str | os.PathLike) -> MobileFaceNet:
    """The ``"foamliu"`` :class:`MobileFaceNet` with the weights of its ONNX export (the recogniser idgen
    ships, :data:`idgen.faces.model_files.MOBILEFACENET_ONNX`), in eval mode.

    Only the graph's initializers are read (no code runs). The export has every batch norm folded
    into its convolution's bias; here each batch norm becomes that bias (mean 0, variance 1 − eps, scale
    1), so the module computes what the graph computes, to float rounding. Width, embedding size and
    input size come from the graph. A graph whose convolutions or activations are not exactly this
    network's raises :class:`~idgen.errors.DataError` naming the file.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFilesMissingError(f"{path}: no such file; pass a MobileFaceNet .onnx file")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 — any file onnx cannot parse
        raise DataError(f"{path}: not an ONNX model ({exc})") from None
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    if not convs or convs[0].input[1] not in weights:
        raise DataError(f"{path}: no convolution weights found; expected a MobileFaceNet export")
    dims = graph.input[0].type.tensor_type.shape.dim
    model = MobileFaceNet(embedding_size=int(weights[convs[-1].input[1]].shape[0]),
                          width=weights[convs[0].input[1]].shape[0] / 64, resolution=int(dims[2].dim_value or 112),
                          variant="foamliu").eval()
    pairs, activations = _graph_layers(model)
    found = [node.op_type for node in graph.node if node.op_type in ("Clip", "Relu", "PRelu")]
    shapes = [tuple(weights[node.input[1]].shape) if node.input[1] in weights else None for node in convs]
    expected = [tuple(layer.weight.shape) if isinstance(layer, nn.Conv2d) else (*layer.weight.shape, 1, 1)
                for layer, _ in pairs]
    if shapes != expected or found != activations or any(len(node.input) < 3 for node in convs):
        raise DataError(f"{path}: not the foamliu MobileFaceNet export idgen ships ({len(convs)} convolutions, "
                        f"{len(found)} activations; expected {len(pairs)} and {len(activations)}, all with biases)")
    with torch.no_grad():
        for node, (layer, norm) in zip(convs, pairs):
            layer.weight.copy_(torch.tensor(weights[node.input[1]]).reshape(layer.weight.shape))
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.tensor(weights[node.input[2]]))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
    return model
