"""A recogniser written by ``idgen recognizer train --arch mobilefacenet``, behind the :mod:`idgen.faces`
recogniser API.

``FaceAnalyzer.from_backend(detector, "<folder>")`` (hence ``idgen eval verify --recognizer <folder>``)
loads it: faces are aligned to the ArcFace template at the model's input size, exactly as in training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFilesMissingError
from ..models import MobileFaceNet, to_tensor
from .align import align_face


def is_trained_recognizer(path: str | os.PathLike) -> bool:
    """A recogniser folder (``config.json`` + ``model.safetensors``), of either trainer."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


class TrainedRecognizer:
    """A MobileFaceNet folder written by ``idgen recognizer train --arch mobilefacenet``, as a recogniser
    (``crop`` + ``embed``)."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        from safetensors.torch import load_file

        folder = Path(folder)
        if not is_trained_recognizer(folder):
            raise ModelFilesMissingError(f"{folder}: expected config.json and model.safetensors from "
                                         "`idgen recognizer train --arch mobilefacenet`")
        self.config = json.loads((folder / "config.json").read_text())
        if "model" not in self.config:  # FaceRecognizer.save_pretrained writes the same two file names
            raise ModelFilesMissingError(
                f"{folder} holds a Face Transformer recogniser (`idgen recognizer train --arch face-transformer`), "
                "which classifies the people it was trained on; face analysis embeds with MobileFaceNet folders "
                "from `idgen recognizer train --arch mobilefacenet`")
        model = self.config["model"]
        self.model = MobileFaceNet(model["embedding_size"], model["width"], model["input_size"])
        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.model.eval().to(device)
        self.device, self.input_size = device, model["input_size"]

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.input_size)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.model(to_tensor(crops).to(self.device)).cpu().numpy()
