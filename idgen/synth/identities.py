"""Synthetic identities: many unit vectors that are far apart from each other.

A face-recognition training set needs identities that a recogniser can tell apart, so the identity
vectors fed to the generator are spread over the hypersphere with every pairwise cosine below a
target (HyperFace-style packing). :func:`sample_identities` starts from random (or prior-drawn)
points and pushes apart every pair that is too close.

Nothing ever forms the full N×N matrix. A *scan* (:func:`scan_pairs`) multiplies one block of rows
with all points at a time and keeps only the pairs above a threshold (each point's ``neighbors``
closest among them), plus the statistics of the whole set. Between scans only the points in such
pairs move, each against its own short partner list, so a step costs O(active points · k · d) and
memory stays at one block of the Gram matrix, a few hundred MB for 100K × 512. The scans, O(N²·d)
matrix products, are the cost that grows with N; a run typically needs two or three.

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


@dataclass
class SimilarityStats:
    """Achieved inter-identity similarity of a set of unit vectors."""

    max_cosine: float
    mean_cosine: float
    mean_nearest_cosine: float  # average over identities of the cosine to their nearest other
    iterations: int = 0

    def to_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def scan_pairs(x: torch.Tensor, threshold: float, neighbors: int = 16, chunk: int = 1024,
               progress: bool = False) -> tuple[torch.Tensor, SimilarityStats]:
    """One pass over all pairs of the rows of ``x`` (unit vectors), a block of ``chunk`` rows at a time.

    Each block is multiplied only with the rows from its own first row on (the upper triangle of
    the Gram matrix: every pair once, half the work). Returns the directed pairs ``(i, j)`` (a 2×P
    tensor, both directions, grouped by ``i``, closest first) whose cosine is above ``threshold``,
    at most ``neighbors`` per ``i``, and the exact :class:`SimilarityStats` of ``x`` (the mean over
    all pairs comes from the sum vector: Σ_{i≠j} x_i·x_j = |Σ x_i|² − N). Memory: ``chunk × N``
    similarities at a time.
    """
    from tqdm.auto import tqdm

    n = x.shape[0]
    nearest = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    firsts, seconds, values = [], [], []
    for start in tqdm(range(0, n, chunk), desc="pairs", unit="block", leave=False, disable=not progress):
        stop = min(start + chunk, n)
        block = x[start:stop] @ x[start:].T  # rows start..stop, columns start..n
        square = block[:, :stop - start]
        square.masked_fill_(torch.ones_like(square, dtype=torch.bool).tril(), -math.inf)  # self and repeats
        nearest[start:stop] = torch.maximum(nearest[start:stop], block.max(dim=1).values)
        nearest[start:] = torch.maximum(nearest[start:], block.max(dim=0).values)
        close = (block > threshold).any(dim=1).nonzero()[:, 0]
        k = min(neighbors, block.shape[1])
        if len(close) and k > 0:
            top = block[close].topk(k, dim=1)
            keep = top.values > threshold
            firsts.append((close[:, None] + start).expand(-1, k)[keep])
            seconds.append(top.indices[keep] + start)
            values.append(top.values[keep])
    total = x.double().sum(0)
    mean = (float(total @ total) - float((x.double() ** 2).sum())) / (n * (n - 1))
    stats = SimilarityStats(float(nearest.max()), mean, float(nearest.mean()))
    if not firsts:
        return torch.zeros(2, 0, dtype=torch.long, device=x.device), stats
    first, second, value = torch.cat(firsts), torch.cat(seconds), torch.cat(values)
    source, target, value = torch.cat([first, second]), torch.cat([second, first]), torch.cat([value, value])
    order = torch.argsort(value, descending=True, stable=True)
    order = order[torch.argsort(source[order], stable=True)]  # by source, closest first
    source, target = source[order], target[order]
    _, counts = torch.unique_consecutive(source, return_counts=True)
    rank = torch.arange(len(source), device=x.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    keep = rank < neighbors
    return torch.stack([source[keep], target[keep]]), stats


def similarity_stats(x: torch.Tensor, chunk: int = 1024, iterations: int = 0) -> SimilarityStats:
    """Max, mean and mean-nearest pairwise cosine without forming the N×N matrix."""
    _, stats = scan_pairs(x, math.inf, 0, chunk)
    stats.iterations = iterations
    return stats


def _partner_lists(pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed pairs (sorted by source) → the distinct sources (A) and their partners, padded
    with -1 to an A×k matrix (k = the longest list)."""
    sources, counts = torch.unique_consecutive(pairs[0], return_counts=True)
    row = torch.repeat_interleave(torch.arange(len(sources), device=pairs.device), counts)
    first = torch.cumsum(counts, 0) - counts
    column = torch.arange(pairs.shape[1], device=pairs.device) - first[row]
    partners = torch.full((len(sources), int(counts.max())), -1, dtype=torch.long, device=pairs.device)
    partners[row, column] = pairs[1]
    return sources, partners


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
    slack: float = 0.02,
    device: str | torch.device = "cpu",
    chunk: int = 1024,
    progress: bool = False,
) -> tuple[torch.Tensor, SimilarityStats]:
    """``n`` unit vectors whose pairwise cosines are all ≤ ``max_cosine`` (when reachable).

    Repulsion: a scan finds every pair closer than ``max_cosine − slack`` (each point's
    ``neighbors`` closest of them); for up to ``refresh_every`` steps each point of those pairs is
    pushed away from each partner it is too close to, by ``step_size × (cosine − max_cosine + margin)``
    along that partner, then put back on the sphere. Points in no close pair do not move. The next
    scan finds the pairs the moves created. The loop stops at the first scan that finds no pair
    above the target (or after ``steps`` steps), so the reported maximum is exact. Returns the
    vectors (float32, on CPU) and the achieved :class:`SimilarityStats` (over all pairs), both from
    that last scan. Deterministic for a given ``seed`` and device.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    x = prior.sample(n, generator) if prior is not None else random_identities(n, dim, generator=generator)
    x = x.to(device)
    margin = 0.01  # aim slightly below the target so points settle under it, not on it
    iterations = 0
    bar = tqdm(total=steps, desc="identities", unit="step", disable=not progress)
    while True:
        pairs, stats = scan_pairs(x, max_cosine - slack, neighbors, chunk, progress)
        bar.set_postfix(max_cos=f"{stats.max_cosine:.4f}", pairs=pairs.shape[1])
        if stats.max_cosine <= max_cosine or iterations >= steps or pairs.shape[1] == 0:
            break
        active, partners = _partner_lists(pairs)
        present = (partners >= 0).to(x.dtype)
        for _ in range(min(refresh_every, steps - iterations)):
            moved, pushed = [], False
            for rows in torch.split(torch.arange(len(active), device=x.device), chunk):
                points, others = x[active[rows]], x[partners[rows].clamp_min(0)]  # B × d, B × k × d
                cosines = torch.einsum("bd,bkd->bk", points, others)
                excess = (cosines - max_cosine + margin).clamp_min(0) * present[rows]
                pushed = pushed or bool(excess.any())
                moved.append(normalize(points - step_size * torch.einsum("bk,bkd->bd", excess, others)))
            if not pushed:
                break
            x[active] = torch.cat(moved)
            iterations += 1
            bar.update(1)
    bar.close()
    stats.iterations = iterations
    return x.float().cpu(), stats
