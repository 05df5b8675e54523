"""IR-SE: the ArcFace ResNet with squeeze-and-excitation units that facexlib publishes as
``recognition_arcface_ir_se50.pth`` (50 layers, 512-d, 112×112 input) and that InfiniteYou
conditions on.

The modules are laid out so that the published checkpoint's tensor names load unchanged:
``input_layer.{0,1,2}`` (conv 3×3, BN, PReLU), ``body.<i>`` units, each a ``res_layer`` (BN, conv
3×3, PReLU, strided conv 3×3, BN, SE with ``fc1`` / ``fc2``) plus a ``shortcut_layer`` (a strided
1×1 conv and BN where the width changes, else a parameter-free subsampling), and ``output_layer.
{0,3,4}`` (BN2d, linear, BN1d; 1 and 2 are dropout and flatten). The output is L2-normalised.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError
from ..io import check_weights, read_torch_weights

#: Units per stage and stage widths of the published IR-SE50.
IR_SE50_UNITS = (3, 4, 14, 3)
IR_SE50_CHANNELS = (64, 128, 256, 512)
#: The squeeze-and-excitation reduction of every unit.
SE_REDUCTION = 16
#: Where users get the published checkpoint (facexlib's release, MIT).
IR_SE50_URL = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"
#: What to do about an IR-SE checkpoint that cannot be used.
IR_SE50_FIX = f"pass facexlib's recognition_arcface_ir_se50.pth ({IR_SE50_URL})"


class SqueezeExcitation(nn.Module):
    """Channel gates: global average, 1×1 conv down by :data:`SE_REDUCTION`, ReLU, 1×1 conv up, sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // SE_REDUCTION, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // SE_REDUCTION, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gates)


class IRSEUnit(nn.Module):
    """One residual unit, ``in_channels`` → ``channels`` at ``stride``."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        if in_channels == channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)   # a 1×1 max-pool: plain subsampling
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                                nn.BatchNorm2d(channels))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False), nn.BatchNorm2d(channels),
            SqueezeExcitation(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE(nn.Module):
    """An IR-SE recogniser: N×3×S×S crops in [-1, 1] (S = ``resolution``, a multiple of 16) to
    L2-normalised ``embedding_size`` vectors. The first unit of each stage halves the resolution.

    Args:
        units: residual units per stage (IR-SE50: 3, 4, 14, 3).
        channels: width of each stage (64, 128, 256, 512); the stem is as wide as the first stage.
    """

    def __init__(self, units=IR_SE50_UNITS, channels=IR_SE50_CHANNELS, embedding_size: int = 512,
                 resolution: int = 112):
        super().__init__()
        if len(units) != len(channels) or min(units) < 1 or min(channels) < SE_REDUCTION:
            raise ValueError(f"units {units} and channels {channels}: one positive count and one width of at least "
                             f"{SE_REDUCTION} per stage")
        if resolution % 2 ** len(units):
            raise ValueError(f"resolution {resolution} must be a multiple of {2 ** len(units)}")
        self.config = {"units": tuple(units), "channels": tuple(channels), "embedding_size": embedding_size,
                       "resolution": resolution}
        self.input_layer = nn.Sequential(nn.Conv2d(3, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                         nn.PReLU(channels[0]))
        layers, width = [], channels[0]
        for count, stage_width in zip(units, channels):
            for index in range(count):
                layers.append(IRSEUnit(width, stage_width, 2 if index == 0 else 1))
                width = stage_width
        self.body = nn.Sequential(*layers)
        side = resolution // 2 ** len(units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(width), nn.Dropout(), nn.Flatten(),
                                          nn.Linear(width * side * side, embedding_size),
                                          nn.BatchNorm1d(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def _shape(state: dict, key: str, path: Path) -> tuple:
    if key not in state:
        raise DataError(f"{path}: not an IR-SE recogniser: missing {key}; {IR_SE50_FIX}")
    return tuple(state[key].shape)


def ir_se_config_of(state: dict, path: str | os.PathLike = "the state dict") -> dict:
    """The :class:`IRSE` arguments a state dict was saved from: each unit's width from its first conv
    (a new stage starts where the width changes), the embedding and input size from the linear layer."""
    path = Path(path)
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.") and k.split(".")[1].isdigit()})
    if not indices or indices != list(range(len(indices))):
        raise DataError(f"{path}: not an IR-SE recogniser: its body units are {indices or 'missing'}, "
                        f"not numbered 0, 1, 2, …; {IR_SE50_FIX}")
    units, channels = [], []
    for index in indices:
        width = _shape(state, f"body.{index}.res_layer.1.weight", path)[0]
        if channels and channels[-1] == width:
            units[-1] += 1
        else:
            units.append(1)
            channels.append(width)
    embedding_size, features = _shape(state, "output_layer.3.weight", path)
    side = math.isqrt(features // channels[-1])
    return {"units": tuple(units), "channels": tuple(channels), "embedding_size": embedding_size,
            "resolution": side * 2 ** len(units)}


def load_ir_se(path: str | os.PathLike) -> IRSE:
    """An :class:`IRSE` with the weights of ``path`` (facexlib's ``recognition_arcface_ir_se50.pth``, a plain
    state dict), read with ``torch.load(weights_only=True)`` (no code in the file runs). The layout comes
    from the tensors; a file whose tensors are not exactly an IR-SE's, or hold NaN or infinite values,
    raises :class:`~idgen.errors.DataError` naming the file and the tensors at fault."""
    path = Path(path).expanduser()
    state = read_torch_weights(path, IR_SE50_FIX)
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise DataError(f"{path}: not a state dict of tensors; {IR_SE50_FIX}")
    config = ir_se_config_of(state, path)
    try:
        model = IRSE(**config)
    except ValueError as error:
        raise DataError(f"{path}: not an IR-SE recogniser ({error}); {IR_SE50_FIX}") from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tracked = tuple(k for k in expected if k.endswith("num_batches_tracked"))   # absent from older checkpoints
    check_weights(state, expected, path, "an IR-SE recogniser", IR_SE50_FIX, tracked)
    model.load_state_dict(state, strict=False)   # exactly the expected keys (num_batches_tracked may be absent)
    return model.eval()
