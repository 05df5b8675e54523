"""Margin classification heads that train a recogniser's embedding for cosine comparison.

Both compare the normalised embedding with normalised class centres (cosine logits scaled by
``s``) and make the true class harder by a margin: ArcFace adds ``m`` to the angle
(cos(θ + m)), CosFace subtracts ``m`` from the cosine (cos θ − m).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MARGIN = {"arcface": 0.5, "cosface": 0.35}


class MarginHead(nn.Module):
    def __init__(self, embedding_size: int, classes: int, kind: str = "arcface", s: float = 64.0,
                 m: float | None = None):
        super().__init__()
        if kind not in DEFAULT_MARGIN:
            raise ValueError(f"unknown margin head {kind!r}; use one of {sorted(DEFAULT_MARGIN)}")
        self.kind, self.s = kind, s
        self.m = DEFAULT_MARGIN[kind] if m is None else m
        self.weight = nn.Parameter(torch.randn(classes, embedding_size) * 0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits for cross-entropy, with the margin applied to each row's true class."""
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        if self.kind == "cosface":
            shifted = target - self.m
        else:
            theta = target.acos()
            # beyond θ = π − m, cos(θ + m) would rise again; continue with a cosine margin of the
            # same size at that point (m·sin m), so the true-class logit keeps falling with θ
            shifted = torch.where(theta + self.m < math.pi, (theta + self.m).cos(), target - self.m * math.sin(self.m))
        return self.s * cosine.scatter(1, labels[:, None], shifted)
