"""SMIRK's expression encoder (Retsinas et al., CVPR 2024), which the Arc2Face Expression Adapter
reads its FLAME expression parameters from: a MobileNetV3-Large "minimal" backbone (3×3 kernels,
ReLU, no squeeze-excite; TensorFlow "same" padding and batch-norm epsilon 1e-3) whose last feature
map is average-pooled into a linear layer with 55 outputs (50 expression, 2 eyelid, 3 jaw).

Written without timm, with timm's module names (``encoder.conv_stem``, ``encoder.blocks.S.B.conv_pw``
…, ``expression_layers.0``), so ``SMIRK_em1.pt``'s ``smirk_encoder.expression_encoder.*`` tensors
load as they are. Input: ``B × 3 × 224 × 224`` RGB in [0, 1] (no mean or deviation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: The prefix of the expression encoder's tensors in SMIRK's checkpoint.
CHECKPOINT_PREFIX = "smirk_encoder.expression_encoder."
EXPRESSIONS, EYELIDS, JAW = 50, 2, 3
#: The stages after the stem: (block kind, repeats, stride of the first, expansion ratio, output channels).
STAGES = [("ds", 1, 1, 1.0, 16), ("ir", 1, 2, 4.0, 24), ("ir", 1, 1, 3.0, 24), ("ir", 3, 2, 3.0, 40),
          ("ir", 1, 2, 6.0, 80), ("ir", 1, 1, 2.5, 80), ("ir", 2, 1, 2.3, 80), ("ir", 2, 1, 6.0, 112),
          ("ir", 3, 2, 6.0, 160), ("cn", 1, 1, 1.0, 960)]
#: Which of :data:`STAGES` share one ``blocks.S`` stage (timm groups them by the architecture's lines).
STAGE_OF = [0, 1, 1, 2, 3, 3, 3, 4, 5, 6]


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's "same" (extra pixel right and bottom)."""

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(inputs, outputs, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class _Block(nn.Module):
    """timm's DepthwiseSeparableConv (``ds``), InvertedResidual (``ir``) or ConvBnAct (``cn``)."""

    def __init__(self, kind: str, inputs: int, outputs: int, stride: int, expansion: float):
        super().__init__()
        self.kind, self.skip = kind, kind != "cn" and stride == 1 and inputs == outputs
        if kind == "cn":
            self.conv, self.bn1 = SameConv2d(inputs, outputs, 1), _norm(outputs)
        elif kind == "ds":
            self.conv_dw, self.bn1 = SameConv2d(inputs, inputs, 3, stride, groups=inputs), _norm(inputs)
            self.conv_pw, self.bn2 = SameConv2d(inputs, outputs, 1), _norm(outputs)
        else:
            middle = _divisible(inputs * expansion)
            self.conv_pw, self.bn1 = SameConv2d(inputs, middle, 1), _norm(middle)
            self.conv_dw, self.bn2 = SameConv2d(middle, middle, 3, stride, groups=middle), _norm(middle)
            self.conv_pwl, self.bn3 = SameConv2d(middle, outputs, 1), _norm(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cn":
            return F.relu(self.bn1(self.conv(x)))
        if self.kind == "ds":
            y = self.bn2(self.conv_pw(F.relu(self.bn1(self.conv_dw(x)))))
        else:
            y = F.relu(self.bn2(self.conv_dw(F.relu(self.bn1(self.conv_pw(x))))))
            y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_stem, self.bn1 = SameConv2d(3, 16, 3, 2), _norm(16)
        stages: list[list[nn.Module]] = [[] for _ in range(max(STAGE_OF) + 1)]
        channels = 16
        for (kind, repeats, stride, expansion, outputs), stage in zip(STAGES, STAGE_OF):
            for k in range(repeats):
                stages[stage].append(_Block(kind, channels, outputs, stride if k == 0 else 1, expansion))
                channels = outputs
        self.blocks = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.relu(self.bn1(self.conv_stem(x))))


class SmirkExpressionEncoder(nn.Module):
    """Photo crops (``B × 3 × 224 × 224``, RGB in [0, 1]) → ``B × 55`` FLAME parameters: 50
    expression, 2 eyelid (clamped to [0, 1]), 3 jaw (the first ≥ 0, the others in [−0.2, 0.2])."""

    def __init__(self):
        super().__init__()
        self.encoder = _Backbone()
        self.expression_layers = nn.Sequential(nn.Linear(960, EXPRESSIONS + EYELIDS + JAW))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images).mean(dim=(2, 3))
        p = self.expression_layers(features)
        eyelids = p[:, EXPRESSIONS:EXPRESSIONS + EYELIDS].clamp(0, 1)
        jaw_open, jaw_sides = F.relu(p[:, EXPRESSIONS + EYELIDS:][:, :1]), p[:, EXPRESSIONS + EYELIDS + 1:].clamp(-0.2, 0.2)
        return torch.cat([p[:, :EXPRESSIONS], eyelids, jaw_open, jaw_sides], dim=1)
