"""Recognisers built from torch networks, behind the :mod:`idgen.faces` recogniser API: a folder
written by ``idgen recognizer train --architecture mobilefacenet|iresnet|edgeface|face-transformer`` (or an
EdgeFace classifier ``idgen forget`` saved) (:class:`TrainedRecognizer`), an insightface ``arcface_torch``
IResNet checkpoint, ``backbone.pth`` (:class:`IResNetFileRecognizer`), and a published EdgeFace checkpoint,
``edgeface_<variant>.pt`` (:class:`EdgeFaceFileRecognizer`).

``FaceAnalyzer.from_backend(detector, "<folder>")`` (hence ``idgen eval verify --recognizer <folder>``)
loads the first, ``"iresnet:<backbone.pth>"`` the second, ``"edgeface:<file.pt>"`` the third: faces are
aligned to the ArcFace template at the model's input size, exactly as in training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFilesMissingError
from ..io import load_module_weights
from ..models import (BACKBONES, EdgeFaceClassifier, FaceRecognizer, build_backbone, load_edgeface,
                      load_insightface_iresnet, to_tensor)
from ..models.edgeface import ARCHITECTURE as EDGEFACE
from ..models.face_transformer import ARCHITECTURE as FACE_TRANSFORMER
from .align import align_face


def is_trained_recognizer(path: str | os.PathLike) -> bool:
    """A recogniser folder (``config.json`` + ``model.safetensors``), of any backbone."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


#: What to do about a recogniser folder whose weights cannot be used.
RETRAIN = "train the recogniser again (`idgen recognizer train`) or copy its folder again"


class NetworkRecognizer:
    """A torch embedding network (input: aligned uint8 crops as :func:`idgen.models.to_tensor` makes
    them) as a recogniser (``crop`` + ``embed``). An embedding network's forward gives the embedding;
    a classifier's (a Face Transformer, an EdgeFace classifier) forward classifies, so its ``embed`` is used."""

    def __init__(self, model: torch.nn.Module, input_size: int, embedding_size: int, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device, self.input_size, self.embedding_size = device, input_size, embedding_size
        self._embed = model.embed if isinstance(model, (FaceRecognizer, EdgeFaceClassifier)) else model

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.input_size)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self._embed(to_tensor(crops).to(self.device)).cpu().numpy()


class TrainedRecognizer(NetworkRecognizer):
    """A folder written by ``idgen recognizer train --arch …`` (MobileFaceNet, IResNet, EdgeFace or a Face
    Transformer) or an EdgeFace classifier ``idgen forget`` saved (of a classifier, the embedding is used
    and the classifier head is not), as a recogniser;
    ``config["architecture"]`` says which (folders without one are MobileFaceNet, or a Face Transformer
    when ``config.json`` holds its options at the top level, as folders from before it was recorded do)."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        folder = Path(folder)
        if not is_trained_recognizer(folder):
            raise ModelFilesMissingError(f"{folder}: expected config.json and model.safetensors from "
                                         "`idgen recognizer train --arch mobilefacenet|iresnet|edgeface|face-transformer`")
        self.config = json.loads((folder / "config.json").read_text())
        architecture = self.config.get("architecture", "mobilefacenet" if "model" in self.config else FACE_TRANSFORMER)
        if architecture not in (*BACKBONES, FACE_TRANSFORMER):
            raise ModelFilesMissingError(f"{folder}/config.json: unknown architecture {architecture!r}; this idgen "
                                         f"loads {sorted((*BACKBONES, FACE_TRANSFORMER))}")
        self.architecture = architecture
        if architecture == FACE_TRANSFORMER or (architecture == EDGEFACE and "classifier" in self.config):
            classifier = FaceRecognizer if architecture == FACE_TRANSFORMER else EdgeFaceClassifier
            model = classifier.from_pretrained(folder)
            super().__init__(model, model.config.image_size, model.config.embedding_dim, device)
            return
        model = build_backbone(architecture, self.config["model"])
        load_module_weights(model, folder / "model.safetensors", f"the {architecture} network config.json describes",
                            RETRAIN)
        super().__init__(model, self.config["model"]["input_size"], self.config["model"]["embedding_size"], device)


class IResNetFileRecognizer(NetworkRecognizer):
    """An insightface ``arcface_torch`` IResNet checkpoint (``backbone.pth``) as a recogniser: loaded with
    :func:`idgen.models.load_insightface_iresnet` (``torch.load(weights_only=True)``), RGB crops in [-1, 1]."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path = Path(path)
        model = load_insightface_iresnet(self.path)
        super().__init__(model, model.config["input_size"], model.config["embedding_size"], device)


class EdgeFaceFileRecognizer(NetworkRecognizer):
    """A published EdgeFace checkpoint (``edgeface_xs_gamma_06.pt``, …) as a recogniser: loaded with
    :func:`idgen.models.load_edgeface` (``torch.load(weights_only=True)``), RGB crops in [-1, 1]."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path = Path(path)
        model = load_edgeface(self.path)
        super().__init__(model, model.config["input_size"], model.config["embedding_size"], device)
