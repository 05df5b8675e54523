"""IResNet (Deng et al., ArcFace, 2019; the "improved" ResNet of insightface's ``arcface_torch``) in plain torch.

The face recogniser most synthetic-face papers (Arc2Face, DCFace, Vec2Face) report with: a 3×3
stem (conv 64 → BN → PReLU, stride 1), four stages of :class:`IBasicBlock` at 64, 128, 256 and 512
channels, each halving the resolution in its first block, then BN → dropout → flatten → a linear
layer over the whole final map → BatchNorm1d, the embedding. A block is BN → conv 3×3 → BN → PReLU →
conv 3×3 (the stage's stride) → BN, added to the input (through conv 1×1 + BN where the shape
changes). :data:`DEPTHS` gives the blocks per stage of IR-18/34/50/100.

Tensor names are those of insightface's published ``arcface_torch`` checkpoints (``backbone.pth``),
so :func:`load_insightface_iresnet` loads one unchanged. ``width`` scales every channel count and
``resolution`` may be any multiple of 16 (the linear layer follows the final map), so the same class
builds the full network (112 px: a 7×7 map) and tiny ones for CPU tests. Input: aligned RGB crops
in [-1, 1] (:func:`idgen.models.to_tensor`), as ``arcface_torch`` normalises them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError
from ..io import check_weights, read_torch_weights

#: Blocks per stage for each depth (insightface's iresnet18/34/50/100).
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
#: Channels of the stem and of the four stages at width 1.
STAGE_CHANNELS = (64, 128, 256, 512)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN → conv 3×3 → BN → PReLU → conv 3×3 (stride) → BN, plus the (downsampled) input."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IR-``depth`` for ``resolution``×``resolution`` crops; ``forward`` gives N×``embedding_size``
    embeddings (not normalised)."""

    def __init__(self, depth: int = 50, embedding_size: int = 512, width: float = 1.0, resolution: int = 112,
                 dropout: float = 0.0):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"IResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if resolution % 16:
            raise ValueError(f"resolution must be a multiple of 16, got {resolution}")
        self.config = {"depth": depth, "embedding_size": embedding_size, "width": width, "resolution": resolution,
                       "dropout": dropout}
        stem, *channels = [max(8, int(c * width)) for c in (STAGE_CHANNELS[0], *STAGE_CHANNELS)]
        self.conv1 = conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = nn.PReLU(stem)
        cin = stem
        for index, (cout, blocks) in enumerate(zip(channels, DEPTHS[depth]), start=1):
            stage = [IBasicBlock(cin, cout, stride=2)] + [IBasicBlock(cout, cout) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            cin = cout
        side = resolution // 16
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        for module in self.modules():   # arcface_torch's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False   # as in arcface_torch: the embedding BN only shifts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×S×S images in [-1, 1] -> N×embedding_size."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _unwrap(state, path: Path) -> dict:
    """The backbone's tensors: a plain state dict (``backbone.pth``) or arcface_torch's training checkpoint
    (``state_dict_backbone``), with a DistributedDataParallel ``module.`` prefix removed."""
    if isinstance(state, dict) and isinstance(state.get("state_dict_backbone"), dict):
        state = state["state_dict_backbone"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a state dict of tensors (an insightface arcface_torch backbone.pth)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def iresnet_config_of(state: dict, path: str | os.PathLike = "the state dict") -> dict:
    """The :class:`IResNet` arguments a state dict was saved from: the depth from the blocks per stage,
    the width from the stem, the embedding size and input size from ``fc.weight``."""
    path = Path(path)
    needed = ("conv1.weight", "fc.weight")
    if any(k not in state for k in needed):
        raise DataError(f"{path}: no {' / '.join(k for k in needed if k not in state)} tensor: not an insightface "
                        f"IResNet backbone (keys start {sorted(state)[:5]})")
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    depth = next((d for d, layers in DEPTHS.items() if layers == blocks), None)
    if depth is None:
        raise DataError(f"{path}: {blocks} blocks per stage match no IResNet depth "
                        f"({', '.join(f'IR-{d}: {layers}' for d, layers in DEPTHS.items())})")
    width = state["conv1.weight"].shape[0] / STAGE_CHANNELS[0]
    embedding_size, features = state["fc.weight"].shape
    final = max(8, int(STAGE_CHANNELS[-1] * width))
    side = round((features / final) ** 0.5)
    if side * side * final != features:
        raise DataError(f"{path}: fc.weight takes {features} features, not {final} channels × a square map")
    return {"depth": depth, "embedding_size": int(embedding_size), "width": width, "resolution": side * 16}


def load_insightface_iresnet(path: str | os.PathLike) -> IResNet:
    """An :class:`IResNet` with the weights of an insightface ``arcface_torch`` checkpoint (``backbone.pth``),
    read with ``torch.load(weights_only=True)`` (no code in the file runs). Depth, width, embedding and
    input size come from the tensors. A file whose tensors are not exactly an IResNet's, or hold NaN or
    infinite values, raises :class:`~idgen.errors.DataError` naming the file and the tensors at fault."""
    path = Path(path).expanduser()
    fix = "pass an insightface arcface_torch backbone.pth"
    state = _unwrap(read_torch_weights(path, fix), path)
    model = IResNet(**iresnet_config_of(state, path))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tracked = tuple(k for k in expected if k.endswith("num_batches_tracked"))   # optional in older checkpoints
    check_weights(state, expected, path, f"an insightface IResNet-{model.config['depth']} backbone", fix, tracked)
    model.load_state_dict(state, strict=False)   # exactly the expected keys (num_batches_tracked may be absent)
    return model
