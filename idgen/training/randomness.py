"""Randomness per training example, so a run does not depend on how its batches are split.

Everything random about one example — its flip, its guidance dropout, the VAE sample, the noise and
the timestep — is drawn from a generator of its own, seeded by (stream seed, position of the example
in the stream). A step therefore computes the same thing whether its examples sit in one batch of
``2b`` on one process or in batches of ``b`` on two, and a resumed run redraws exactly what an
uninterrupted one drew. Draws happen on the CPU and are moved to the model's device afterwards, so
they are also the same on every device.
"""

from __future__ import annotations

import hashlib

import torch


def example_generator(seed: int, position: int) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def rand(generators: list[torch.Generator]) -> torch.Tensor:
    """One uniform number in [0, 1) per example."""
    return torch.cat([torch.rand(1, generator=g) for g in generators])


def randn(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    """A float32 Gaussian tensor of ``shape``; example ``i`` (row ``i``) from ``generators[i]``."""
    if shape[0] != len(generators):
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generators])


def randint(high: int, generators: list[torch.Generator]) -> torch.Tensor:
    """One integer in [0, high) per example."""
    return torch.cat([torch.randint(0, high, (1,), generator=g) for g in generators])
