"""Margin-softmax classification heads (CosFace, ArcFace) shared by every recogniser backbone."""

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
