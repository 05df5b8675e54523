"""MobileFaceNet (Chen et al., 2018) in plain torch: a ~1 M-parameter face recogniser.

Inverted-residual bottlenecks as in MobileNetV2, then a global *depthwise* convolution over the
final feature map instead of global average pooling (it lets the network weigh the face centre
differently from the border), then a linear embedding. ``width`` scales every channel count and
``input_size`` may be any multiple of 16 (the global depthwise kernel follows it), so the same
class gives the full model (112 px, width 1) and tiny ones for CPU tests.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True,
            padding: int | None = None) -> nn.Sequential:
    """Convolution (``same`` padding unless given), batch norm, and PReLU when ``act``."""
    padding = kernel // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, hidden), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, cout, act=False))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


# (expansion, output channels, repeats, first stride) of the paper's Table 1
STAGES = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_size: int = 128, width: float = 1.0, input_size: int = 112):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.config = {"embedding_size": embedding_size, "width": width, "input_size": input_size}
        c = lambda channels: max(8, int(channels * width))  # noqa: E731
        layers = [conv_bn(3, c(64), 3, 2), conv_bn(c(64), c(64), 3, 1, groups=c(64))]
        cin = c(64)
        for expansion, cout, repeats, stride in STAGES:
            for i in range(repeats):
                layers.append(Bottleneck(cin, c(cout), stride if i == 0 else 1, expansion))
                cin = c(cout)
        layers.append(conv_bn(cin, c(512)))
        side = input_size // 16
        layers.append(conv_bn(c(512), c(512), side, groups=c(512), act=False, padding=0))  # global depthwise conv
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(c(512), embedding_size, bias=False),
                                       nn.BatchNorm1d(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×S×S images normalised to about [-1, 1] -> N×embedding_size (not normalised)."""
        return self.embedding(self.features(x))
