"""The embedding backbones by the ``architecture`` name a saved recogniser folder records."""

from __future__ import annotations

from torch import nn

from .iresnet import IResNet
from .mobilefacenet import MobileFaceNet

#: ``architecture`` (``config.json``) -> the class its ``model`` arguments build.
BACKBONES = {"mobilefacenet": MobileFaceNet, "iresnet": IResNet}


def build_backbone(architecture: str, config: dict) -> nn.Module:
    """The ``architecture`` network built from its saved ``config`` (the network's own ``.config``)."""
    if architecture not in BACKBONES:
        raise ValueError(f"unknown recogniser architecture {architecture!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[architecture](**config)
