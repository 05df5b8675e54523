"""Recognisers built from torch networks, behind the :mod:`idgen.faces` recogniser API: a folder
written by ``idgen recognizer train --architecture mobilefacenet|iresnet|face-transformer`` (:class:`TrainedRecognizer`),
an insightface ``arcface_torch`` IResNet checkpoint, ``backbone.pth`` (:class:`IResNetFileRecognizer`), and
facexlib's IR-SE50, ``recognition_arcface_ir_se50.pth`` (:class:`IRSEFileRecognizer`).

``FaceAnalyzer.from_backend(detector, "<folder>")`` (hence ``idgen eval verify --recognizer <folder>``)
loads the first, ``"iresnet:<backbone.pth>"`` the second, ``"ir_se50:<file.pth>"`` the third: faces are
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
from ..models import BACKBONES, FaceRecognizer, build_backbone, load_insightface_iresnet, load_ir_se, to_tensor
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
    a Face Transformer's forward classifies, so its ``embed`` is used."""

    def __init__(self, model: torch.nn.Module, resolution: int, embedding_size: int, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device, self.resolution, self.embedding_size = device, resolution, embedding_size
        self._embed = model.embed if isinstance(model, FaceRecognizer) else model

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.resolution)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self._embed(to_tensor(crops).to(self.device)).cpu().numpy()


class TrainedRecognizer(NetworkRecognizer):
    """A folder written by ``idgen recognizer train --architecture …`` (MobileFaceNet, IResNet or a Face
    Transformer, whose embedding is used and whose classifier head is not), as a recogniser;
    ``config["architecture"]`` says which."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        folder = Path(folder)
        if not is_trained_recognizer(folder):
            raise ModelFilesMissingError(f"{folder}: expected config.json and model.safetensors from "
                                         "`idgen recognizer train --architecture mobilefacenet|iresnet|face-transformer`")
        self.config = json.loads((folder / "config.json").read_text())
        architecture = self.config.get("architecture")
        if architecture not in (*BACKBONES, FACE_TRANSFORMER):
            raise ModelFilesMissingError(f"{folder}/config.json: unknown architecture {architecture!r}; this idgen "
                                         f"loads {sorted((*BACKBONES, FACE_TRANSFORMER))}")
        self.architecture = architecture
        if architecture == FACE_TRANSFORMER:
            model = FaceRecognizer.from_pretrained(folder)
            super().__init__(model, model.config.resolution, model.config.embedding_dim, device)
            return
        model = build_backbone(architecture, self.config["model"])
        load_module_weights(model, folder / "model.safetensors", f"the {architecture} network config.json describes",
                            RETRAIN)
        super().__init__(model, self.config["model"]["resolution"], self.config["model"]["embedding_size"], device)


class IResNetFileRecognizer(NetworkRecognizer):
    """An insightface ``arcface_torch`` IResNet checkpoint (``backbone.pth``) as a recogniser: loaded with
    :func:`idgen.models.load_insightface_iresnet` (``torch.load(weights_only=True)``), RGB crops in [-1, 1]."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path = Path(path)
        model = load_insightface_iresnet(self.path)
        super().__init__(model, model.config["resolution"], model.config["embedding_size"], device)


class IRSEFileRecognizer(NetworkRecognizer):
    """facexlib's IR-SE50 (``recognition_arcface_ir_se50.pth``) as a recogniser, fed as InfiniteYou feeds it:
    the face aligned to the ArcFace template at 112×112 (insightface's ``norm_crop``), its channels in BGR
    order, scaled to [-1, 1]; the embedding is L2-normalised. Loaded with :func:`idgen.models.load_ir_se`
    (``torch.load(weights_only=True)``)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path = Path(path)
        model = load_ir_se(self.path)
        super().__init__(model, model.config["resolution"], model.config["embedding_size"], device)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(np.asarray(crops)[..., ::-1])
        return self._embed(to_tensor(bgr).to(self.device)).cpu().numpy()
