"""A recogniser written by ``idgen fr train``, behind the :mod:`idgen.faces` recogniser API.

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
from .mobilefacenet import MobileFaceNet


def to_tensor(crops) -> torch.Tensor:
    """N×S×S×3 uint8 (numpy or torch) -> N×3×S×S float in [-1, 1]."""
    crops = torch.as_tensor(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    return crops.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def is_trained_recognizer(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


class TrainedRecognizer:
    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        from safetensors.torch import load_file

        folder = Path(folder)
        if not is_trained_recognizer(folder):
            raise ModelFilesMissingError(f"{folder}: expected config.json and model.safetensors from `idgen fr train`")
        self.config = json.loads((folder / "config.json").read_text())
        model = self.config["model"]
        self.model = MobileFaceNet(model["embedding_size"], model["width"], model["input_size"])
        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.model.eval().to(device)
        self.device, self.input_size = device, model["input_size"]

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        from ..faces import align_face

        return align_face(image, landmarks, self.input_size)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.model(to_tensor(crops).to(self.device)).cpu().numpy()
