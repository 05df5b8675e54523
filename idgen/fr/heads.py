"""Margin classification heads that train a recogniser's embedding for cosine comparison.

Both compare the normalised embedding with normalised class centres (cosine logits scaled by
``s``) and make the true class harder by a margin: ArcFace adds ``m`` to the angle
(cos(θ + m)), CosFace subtracts ``m`` from the cosine (cos θ − m).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    def __init__(self, embedding_size: int, classes: int, kind: str = "arcface", s: float = 64.0, m: float | None = None):
        super().__init__()
        if kind not in ("arcface", "cosface"):
            raise ValueError(f"unknown margin head {kind!r}; use 'arcface' or 'cosface'")
        self.kind, self.s = kind, s
        self.m = m if m is not None else (0.5 if kind == "arcface" else 0.35)
        self.weight = nn.Parameter(torch.randn(classes, embedding_size) * 0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits for cross-entropy, with the margin applied to each row's true class."""
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        if self.kind == "arcface":
            theta = target.acos()
            # past θ = π − m the angle would wrap around; fall back to a cosine margin there
            shifted = torch.where(theta + self.m < torch.pi, (theta + self.m).cos(), target - self.m * torch.sin(torch.tensor(self.m)))
        else:
            shifted = target - self.m
        return self.s * cosine.scatter(1, labels[:, None], shifted)
