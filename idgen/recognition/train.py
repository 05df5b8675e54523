"""Training a Face Transformer recogniser from scratch on an identity-labelled face folder,
optionally distilling a pretrained recogniser's embeddings (:mod:`idgen.recognition.distill`), and
the learning-rate schedule every recogniser trainer uses (:func:`warmup_cosine`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import FaceSet, to_model_input
from ..models import FaceRecognizer


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    augment: bool = True
    seed: int = 0
    # distillation (off unless distill_from is set): teacher spec, e.g. "mobilefacenet:PATH"
    distill_from: str | None = None
    distill_weight: float = 10.0           # weight of 1 − cos(student, teacher)
    distill_images: str | None = None      # extra <identity>/<image> photos (other people) to distil on
    distill_max_images: int = 0            # how many of them (a seeded draw)
    distill_batch_size: int = 32           # extra images per step


def warmup_cosine(total: int, warmup: int, decay_from_start: bool = False):
    """The learning-rate schedule of every recogniser trainer, as a multiplier per step for
    ``LambdaLR``: a linear rise over the first ``warmup`` steps (1 from step ``warmup − 1`` on), times a
    half cosine from 1 to 0 over the steps after the warm-up, or over all ``total`` steps with
    ``decay_from_start`` (the Face Transformer's; MobileFaceNet's decays after the warm-up)."""
    ramp = max(1, warmup)
    start = 0 if decay_from_start else ramp
    span = max(1, total - start)
    return lambda step: (min(1.0, (step + 1) / ramp)
                         * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, step - start) / span))))


def _batch_indices(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start: start + batch_size]


def _cycle(data: FaceSet, batch_size: int, generator: torch.Generator):
    while True:
        yield from _batch_indices(len(data), batch_size, generator)


def _distill_loss(embeddings: torch.Tensor, teacher: torch.Tensor, projection) -> torch.Tensor:
    student = embeddings if projection is None else projection(embeddings)
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def train_recognizer(model: FaceRecognizer, train: FaceSet, config: TrainConfig, progress: bool = True,
                     extra: FaceSet | None = None) -> dict:
    """AdamW with linear warm-up then cosine decay on the margin loss; returns a small log.

    When ``train.teacher`` holds teacher embeddings, ``config.distill_weight · (1 − cos)`` to them is
    added, also on a batch of ``extra`` (unlabelled, with teacher embeddings) per step. A linear
    projection maps the student's embedding to the teacher's width when they differ; it is used only
    during training."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    distill = train.teacher is not None
    projection = None
    if distill and train.teacher.shape[1] != model.config.embedding_dim:
        projection = torch.nn.Linear(model.config.embedding_dim, train.teacher.shape[1], bias=False)
    params = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, decay_from_start=True))
    extra_batches = _cycle(extra, config.distill_batch_size, generator) if distill and extra is not None else None
    model.train()
    start, losses = time.perf_counter(), []
    for _ in tqdm(range(config.epochs), desc="training recogniser", disable=not progress):
        epoch_loss = 0.0
        for index in _batch_indices(len(train), config.batch_size, generator):
            images, labels = train.images[index], train.labels[index]
            embeddings = model.embed(to_model_input(images, config.augment))
            loss = F.cross_entropy(model.head(embeddings, labels), labels)
            if distill:
                loss = loss + config.distill_weight * _distill_loss(embeddings, train.teacher[index], projection)
            if extra_batches is not None:
                extra_index = next(extra_batches)
                extra_emb = model.embed(to_model_input(extra.images[extra_index], config.augment))
                loss = loss + config.distill_weight * _distill_loss(extra_emb, extra.teacher[extra_index], projection)
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
def predict(model: FaceRecognizer, data: FaceSet, batch_size: int = 256, exclude=()) -> torch.Tensor:
    """Arg-max class (no margin) for every image, over all classes but those in ``exclude``."""
    was_training = model.training
    model.eval()
    excluded = torch.as_tensor(sorted(exclude), dtype=torch.long)
    out = torch.cat([model(to_model_input(data.images[i: i + batch_size])).index_fill(1, excluded, float("-inf")).argmax(1)
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
