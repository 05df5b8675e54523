"""Training a Face Transformer recogniser from scratch on an identity-labelled face folder."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import FaceSet, to_model_input
from .model import FaceRecognizer


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    augment: bool = True
    seed: int = 0


def iterate_batches(data: FaceSet, batch_size: int, generator: torch.Generator, shuffle: bool = True):
    order = torch.randperm(len(data), generator=generator) if shuffle else torch.arange(len(data))
    for start in range(0, len(order), batch_size):
        index = order[start: start + batch_size]
        yield data.images[index], data.labels[index]


def train_recognizer(model: FaceRecognizer, train: FaceSet, config: TrainConfig, progress: bool = True) -> dict:
    """AdamW with linear warm-up then cosine decay on the margin loss; returns a small log."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay to zero
        optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup))
        * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total)))))
    model.train()
    start, losses = time.perf_counter(), []
    for _ in tqdm(range(config.epochs), desc="training recogniser", disable=not progress):
        epoch_loss = 0.0
        for images, labels in iterate_batches(train, config.batch_size, generator):
            loss = F.cross_entropy(model(to_model_input(images, config.augment), labels), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss += loss.item() * len(labels)
        losses.append(epoch_loss / len(train))
    model.eval()
    return {"epochs": config.epochs, "final_loss": losses[-1], "losses": losses,
            "wall_seconds": time.perf_counter() - start}


@torch.no_grad()
def predict(model: FaceRecognizer, data: FaceSet, batch_size: int = 256) -> torch.Tensor:
    """Arg-max class over all classes (no margin) for every image."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(to_model_input(data.images[i: i + batch_size])).argmax(1)
                     for i in range(0, len(data), batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def embed(model: FaceRecognizer, data: FaceSet, batch_size: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model.embed(to_model_input(data.images[i: i + batch_size]))
                     for i in range(0, len(data), batch_size)])
    model.train(was_training)
    return out
