"""Synthetic identities: many unit vectors that are far apart from each other.

A face-recognition training set needs identities that a recogniser can tell apart, so the identity
vectors fed to the generator are spread over the hypersphere with every pairwise cosine below a
target (HyperFace-style packing). :func:`sample_identities` starts from random (or prior-drawn)
points and pushes apart every pair that is too close. Nothing ever forms the full N×N matrix: each
point only looks at its ``neighbors`` nearest others, found chunk by chunk, so 100K × 512 fits in a
few hundred MB and the cost per step is O(N·k·d) between the occasional O(N²·d) neighbour search
(a matrix product, fast on a GPU).

Single-vector operations (normalising, random directions, a perturbation at an exact cosine) live
in :mod:`idgen.identity`; :func:`perturb_within_cosine` only draws *how far* to perturb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..identity import normalize, perturb, random_identities


def perturb_within_cosine(x: torch.Tensor, min_cosine: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A unit vector near each row of ``x``: cosine to it drawn uniformly from ``[min_cosine, 1]``.

    Vec2Face-style variation of one identity: the cosine is drawn first, then
    :func:`idgen.identity.perturb` places the vector at exactly that cosine in a random
    direction. ``min_cosine = 1`` returns ``x`` itself (not renormalised, so a unit target reaches
    the generator bit for bit).
    """
    if min_cosine >= 1.0:
        return x.clone()
    x = normalize(x)
    cosine = min_cosine + (1.0 - min_cosine) * torch.rand(x.shape[:-1] + (1,), generator=generator, dtype=x.dtype)
    return perturb(x, cosine, generator=generator).reshape(x.shape)


@dataclass
class GaussianPrior:
    """A Gaussian fitted to real (normalised) face embeddings, to draw identities that look like
    real ones: real embeddings occupy a cone of the sphere, not all of it."""

    mean: torch.Tensor  # (d,)
    scale: torch.Tensor  # (d, d): samples are mean + z @ scale.T

    @classmethod
    def fit(cls, embeddings: torch.Tensor, shrinkage: float = 0.1) -> "GaussianPrior":
        """Fit to N×d embeddings; ``shrinkage`` blends the covariance toward its mean variance so
        a prior fitted on fewer samples than dimensions is still full rank."""
        x = normalize(embeddings.double())
        mean = x.mean(0)
        cov = torch.cov(x.T) if len(x) > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype)
        target = cov.diagonal().mean().clamp_min(1e-6) * torch.eye(x.shape[1], dtype=x.dtype)
        cov = (1 - shrinkage) * cov + shrinkage * target
        return cls(mean.float(), torch.linalg.cholesky(cov).float())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.mean.numel(), generator=generator)
        return normalize(self.mean + z @ self.scale.T)


def nearest_neighbors(x: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar other rows of ``x`` for every row: (cosines, indices), both N×k.

    Computed one block of rows at a time, so memory is ``chunk × N`` rather than ``N × N``.
    """
    n = x.shape[0]
    k = min(k, n - 1)
    values, indices = [], []
    for start in range(0, n, chunk):
        block = x[start:start + chunk] @ x.T
        rows = torch.arange(block.shape[0], device=x.device)
        block[rows, rows + start] = -math.inf  # a point is not its own neighbour
        top = block.topk(k, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


@dataclass
class SimilarityStats:
    """Achieved inter-identity similarity of a set of unit vectors."""

    max_cosine: float
    mean_cosine: float
    mean_nearest_cosine: float  # average over identities of the cosine to their nearest other
    iterations: int = 0

    def to_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def similarity_stats(x: torch.Tensor, chunk: int = 2048, iterations: int = 0) -> SimilarityStats:
    """Max, mean and mean-nearest pairwise cosine without forming the N×N matrix.

    The mean over all pairs comes from the sum vector: Σ_{i≠j} x_i·x_j = |Σ x_i|² − N.
    """
    n = x.shape[0]
    nearest, _ = nearest_neighbors(x, 1, chunk)
    total = x.double().sum(0)
    mean = (float(total @ total) - float((x.double() ** 2).sum())) / (n * (n - 1))
    return SimilarityStats(float(nearest.max()), mean, float(nearest.mean()), iterations)


def sample_identities(
    n: int,
    dim: int = 512,
    max_cosine: float = 0.3,
    *,
    seed: int = 0,
    prior: GaussianPrior | None = None,
    neighbors: int = 16,
    steps: int = 500,
    refresh_every: int = 10,
    step_size: float = 0.5,
    device: str | torch.device = "cpu",
    chunk: int = 2048,
    progress: bool = False,
) -> tuple[torch.Tensor, SimilarityStats]:
    """``n`` unit vectors whose pairwise cosines are all ≤ ``max_cosine`` (when reachable).

    Repulsion: every point is pushed away from each neighbour it is too close to, by
    ``step_size × (cosine − max_cosine + margin)`` along that neighbour, then put back on the
    sphere. Neighbour lists are refreshed every ``refresh_every`` steps; the loop stops at the
    first refresh that finds no pair above the target, so the reported maximum is exact. Returns
    the vectors (float32, on CPU) and the achieved :class:`SimilarityStats` (over all pairs).
    Deterministic for a given ``seed`` and device.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    x = prior.sample(n, generator) if prior is not None else random_identities(n, dim, generator=generator)
    x = x.to(device)
    margin = 0.01  # aim slightly below the target so points settle under it, not on it
    neighbor_idx = None
    iterations = 0
    bar = tqdm(total=steps, desc="identities", unit="step", disable=not progress)
    for iterations in range(steps + 1):
        if iterations % refresh_every == 0:
            nearest, neighbor_idx = nearest_neighbors(x, neighbors, chunk)
            worst = float(nearest[:, 0].max())
            bar.set_postfix(max_cos=f"{worst:.4f}")
            if worst <= max_cosine or iterations == steps:
                break
        others = x[neighbor_idx]  # N × k × d
        cosines = torch.einsum("nd,nkd->nk", x, others)
        excess = (cosines - max_cosine + margin).clamp_min(0)
        x = normalize(x - step_size * torch.einsum("nk,nkd->nd", excess, others))
        bar.update(1)
    bar.close()
    x = x.float().cpu()
    return x, similarity_stats(x, chunk, iterations)
