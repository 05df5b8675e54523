"""Margin-softmax classification heads (CosFace, ArcFace, AdaFace) shared by every recogniser backbone."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    """Normalised class weights; CosFace (cos θ − m) or ArcFace (cos(θ + m)) margin on the true class.

    ``forward(embeddings)`` gives the test-time logits ``s·cos θ``; ``forward(embeddings, labels)``
    applies the margin to each row's label (used for training)."""

    def __init__(self, embedding_dim: int, num_classes: int, kind: str, scale: float, margin: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.kind, self.scale, self.margin = kind, scale, margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(embeddings)
        if labels is None or self.margin == 0:
            return self.scale * cos
        target = F.one_hot(labels, cos.shape[1]).bool()
        if self.kind == "cosface":
            adjusted = cos - self.margin
        else:
            theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
            adjusted = torch.cos((theta + self.margin).clamp(max=math.pi))
        return self.scale * torch.where(target, adjusted, cos)


class AdaFaceHead(MarginHead):
    """AdaFace (Kim, Jain & Liu, CVPR 2022): a margin that adapts to image quality, read from the
    embedding's norm ‖z‖.

    The norm is standardised by running batch statistics and scaled: ẑ = clip(h·(‖z‖ − μ)/(σ + ε), −1, 1)
    (μ, σ: mean and unbiased standard deviation of the batch's norms, clipped to [0.001, 100], kept as
    running averages ``μ ← α·mean + (1 − α)·μ`` with momentum α = 0.01, starting at 20 and 100 as in the
    authors' code, and updated before use). The true class's logit is ``s·(cos(θ + g_angle) − g_add)``
    with g_angle = −m·ẑ and g_add = m·ẑ + m: a high-norm (good) image gets an ArcFace-like angular
    margin, a low-norm (hard) one a CosFace-like additive margin. As in the authors' code, cosines are
    kept within ε = 1e-3 of ±1 and θ + g_angle within [ε, π − ε]. The running statistics are updated
    only in training mode, and only with a batch of at least two (σ of one image is undefined).
    Without labels, ``forward`` gives the plain test-time logits ``s·cos θ``."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.4,
                 h: float = 0.333, momentum: float = 0.01, eps: float = 1e-3):
        super().__init__(embedding_dim, num_classes, "adaface", scale, margin)
        self.h, self.momentum, self.eps = h, momentum, eps
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        norms = embeddings.detach().norm(dim=1).clamp(0.001, 100)
        if self.training and len(norms) > 1:
            with torch.no_grad():
                self.batch_mean.mul_(1 - self.momentum).add_(self.momentum * norms.mean())
                self.batch_std.mul_(1 - self.momentum).add_(self.momentum * norms.std())
        z = (self.h * (norms - self.batch_mean) / (self.batch_std + self.eps)).clamp(-1, 1)[:, None]
        target = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        theta = torch.acos(cos.clamp(-1 + self.eps, 1 - self.eps))
        theta = (theta + target * (-self.margin * z)).clamp(self.eps, math.pi - self.eps)
        return self.scale * (torch.cos(theta) - target * (self.margin * z + self.margin))


#: The margin heads by name, with the margin of each paper.
HEADS = {"arcface": 0.5, "cosface": 0.35, "adaface": 0.4}


def margin_head(kind: str, embedding_dim: int, num_classes: int, scale: float, margin: float | None = None) -> MarginHead:
    """The ``kind`` head (``arcface``, ``cosface``, ``adaface``); ``margin`` None: the paper's (:data:`HEADS`)."""
    if kind not in HEADS:
        raise ValueError(f"unknown margin head {kind!r}; use one of {sorted(HEADS)}")
    margin = HEADS[kind] if margin is None else margin
    if kind == "adaface":
        return AdaFaceHead(embedding_dim, num_classes, scale, margin)
    return MarginHead(embedding_dim, num_classes, kind, scale, margin)
