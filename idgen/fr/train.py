"""Train a compact face recogniser with a margin head, on one device or many (accelerate).

Saves ``model.safetensors`` (the embedding network only) and ``config.json``; load it back with
:class:`TorchRecognizer` and use it as any other ``idgen.faces`` recogniser.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..io import save_safetensors_atomic, write_json_atomic
from .data import FaceSet, to_tensor
from .heads import MarginHead
from .mobilefacenet import MobileFaceNet


@dataclass
class TrainConfig:
    data: str
    output: str
    head: str = "arcface"           # or "cosface"
    margin: Optional[float] = None  # default 0.5 (ArcFace) / 0.35 (CosFace)
    scale: float = 32.0
    width: float = 1.0
    input_size: int = 112
    embedding_size: int = 128
    crop: float = 1.0               # centred square of this fraction of the shorter side
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    workers: int = 0
    seed: int = 0
    progress: bool = True


def train_recognizer(config: TrainConfig) -> dict:
    from accelerate import Accelerator

    torch.manual_seed(config.seed)
    accelerator = Accelerator()
    data = FaceSet(config.data, config.input_size, config.crop)
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True, drop_last=len(data) > config.batch_size,
                                         num_workers=config.workers, generator=torch.Generator().manual_seed(config.seed))
    model = MobileFaceNet(config.embedding_size, config.width, config.input_size)
    head = MarginHead(config.embedding_size, data.classes, config.head, config.scale, config.margin)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=config.lr, momentum=0.9,
                                weight_decay=config.weight_decay, nesterov=True)
    total = config.epochs * math.ceil(len(data) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total, pct_start=0.1)
    model, head, optimizer, loader, schedule = accelerator.prepare(model, head, optimizer, loader, schedule)
    bar = tqdm(total=total, desc="train", disable=not (config.progress and accelerator.is_main_process))
    losses = []
    for _ in range(config.epochs):
        model.train()
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(head(model(images), labels), labels)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    summary = {"images": len(data), "classes": data.classes, "steps": len(losses),
               "first_loss": losses[0], "final_loss": float(np.mean(losses[-10:]))}
    if accelerator.is_main_process:
        out = Path(config.output)
        weights = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_safetensors_atomic(weights, out / "model.safetensors")
        write_json_atomic(out / "config.json", {"architecture": "mobilefacenet",
                                                 **accelerator.unwrap_model(model).config,
                                                 "crop": config.crop, "train": asdict(config), "summary": summary})
    return summary


class TorchRecognizer:
    """A recogniser trained by :func:`train_recognizer`, behind the ``idgen.faces`` recogniser API."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        self.model = MobileFaceNet(config["embedding_size"], config["width"], config["input_size"])
        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.model.eval().to(device)
        self.device, self.input_size = device, config["input_size"]
        self.embedding_size = config["embedding_size"]

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        from ..faces import align_face

        return align_face(image, landmarks, self.input_size)

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.model(to_tensor(np.asarray(crops)).to(self.device)).cpu().numpy()
