"""Recognisers built from torch networks, behind the :mod:`idgen.faces` recogniser API: a folder
written by ``idgen recognizer train --arch mobilefacenet|iresnet`` (:class:`TrainedRecognizer`), and an
insightface ``arcface_torch`` IResNet checkpoint, ``backbone.pth`` (:class:`IResNetFileRecognizer`).

``FaceAnalyzer.from_backend(detector, "<folder>")`` (hence ``idgen eval verify --recognizer <folder>``)
loads the first, ``"iresnet:<backbone.pth>"`` the second: faces are aligned to the ArcFace template at
the model's input size, exactly as in training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFilesMissingError
from ..models import BACKBONES, build_backbone, load_insightface_iresnet, to_tensor
from .align import align_face


def is_trained_recognizer(path: str | os.PathLike) -> bool:
    """A recogniser folder (``config.json`` + ``model.safetensors``), of either trainer."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


class NetworkRecognizer:
    """A torch embedding network (input: aligned uint8 crops as :func:`idgen.models.to_tensor` makes
    them) as a recogniser (``crop`` + ``embed``)."""

    def __init__(self, model: torch.nn.Module, input_size: int, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device, self.input_size = device, input_size
        self.embedding_size = model.config["embedding_size"]

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.input_size)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.model(to_tensor(crops).to(self.device)).cpu().numpy()


class TrainedRecognizer(NetworkRecognizer):
    """A MobileFaceNet or IResNet folder written by ``idgen recognizer train --arch mobilefacenet|iresnet``,
    as a recogniser; ``config["architecture"]`` says which (folders without one are MobileFaceNet)."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        from safetensors.torch import load_file

        folder = Path(folder)
        if not is_trained_recognizer(folder):
            raise ModelFilesMissingError(f"{folder}: expected config.json and model.safetensors from "
                                         "`idgen recognizer train --arch mobilefacenet` (or `--arch iresnet`)")
        self.config = json.loads((folder / "config.json").read_text())
        if "model" not in self.config:  # FaceRecognizer.save_pretrained writes the same two file names
            raise ModelFilesMissingError(
                f"{folder} holds a Face Transformer recogniser (`idgen recognizer train --arch face-transformer`), "
                "which classifies the people it was trained on; face analysis embeds with MobileFaceNet or IResNet "
                "folders from `idgen recognizer train --arch mobilefacenet` or `--arch iresnet`")
        architecture = self.config.get("architecture", "mobilefacenet")
        if architecture not in BACKBONES:
            raise ModelFilesMissingError(f"{folder}/config.json: unknown architecture {architecture!r}; this idgen "
                                         f"loads {sorted(BACKBONES)}")
        self.architecture = architecture
        model = build_backbone(architecture, self.config["model"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        super().__init__(model, self.config["model"]["input_size"], device)


class IResNetFileRecognizer(NetworkRecognizer):
    """An insightface ``arcface_torch`` IResNet checkpoint (``backbone.pth``) as a recogniser: loaded with
    :func:`idgen.models.load_insightface_iresnet` (``torch.load(weights_only=True)``), RGB crops in [-1, 1]."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path = Path(path)
        model = load_insightface_iresnet(self.path)
        super().__init__(model, model.config["input_size"], device)
