"""The embedding backbones by the ``architecture`` name a saved recogniser folder records, and that
folder's format, which every backbone writes (:func:`save_recognizer`)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..io import save_module_weights, write_json_atomic
from .edgeface import EdgeFace
from .iresnet import IResNet
from .mobilefacenet import MobileFaceNet

#: ``architecture`` (``config.json``) -> the class its ``model`` arguments build.
BACKBONES = {"mobilefacenet": MobileFaceNet, "iresnet": IResNet, "edgeface": EdgeFace}


def build_backbone(architecture: str, config: dict) -> nn.Module:
    """The ``architecture`` network built from its saved ``config`` (the network's own ``.config``)."""
    if architecture not in BACKBONES:
        raise ValueError(f"unknown recogniser architecture {architecture!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[architecture](**config)


def save_recognizer(folder: str | os.PathLike, architecture: str, network: nn.Module, model: dict,
                    **record) -> None:
    """The recogniser folder of every backbone: ``model.safetensors`` (``network``'s weights) and
    ``config.json``: ``architecture`` (``mobilefacenet``, ``iresnet``, ``edgeface``, ``face-transformer``), the
    network's arguments as ``model``, and ``record`` (the training options, a summary, a Face
    Transformer's class names). :mod:`idgen.faces` loads it as a recogniser."""
    folder = Path(folder)
    save_module_weights(network, folder / "model.safetensors", metadata={"format": "pt"})
    write_json_atomic(folder / "config.json", {"architecture": architecture, "model": model, **record})
