"""Operations on identity vectors (face-recognition embeddings) as plain torch tensors.

Identity-conditioned generators such as Arc2Face only ever see the *direction* of an ArcFace
embedding: it is L2-normalised before use, so identities live on the unit hypersphere. Every
operation here therefore takes vectors of any length and returns unit vectors, works on the last
dimension (``D`` or ``N×D``) and computes in at least float32 before casting back, so the results
are the same for fp16/bf16 inputs. Randomness always comes from an explicit ``torch.Generator``
so that datasets built from these identities are reproducible.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Number = Union[float, torch.Tensor]

#: Vectors shorter than this are treated as zero (no direction, hence no identity).
EPS = 1e-8


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def normalize(identity: torch.Tensor) -> torch.Tensor:
    """Scale each vector (last dimension) to unit length; raises on a zero vector."""
    x = identity.to(_work_dtype(identity))
    norm = x.norm(dim=-1, keepdim=True)
    if bool((norm < EPS).any()):
        raise ValueError("cannot normalise a zero identity vector (it has no direction)")
    return (x / norm).to(identity.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: Number) -> torch.Tensor:
    """Spherical interpolation from identity ``a`` (t=0) to ``b`` (t=1) along the great circle.

    Unlike a linear blend, the angle to ``a`` grows linearly with ``t``, so ``t`` is a fair "how far
    towards b" knob. ``t`` may be a float or a tensor broadcasting against ``a[..., :1]`` (e.g.
    shape ``N×1`` to make N steps at once). Opposite vectors have no unique great circle and raise.
    """
    dtype = torch.promote_types(a.dtype, b.dtype)
    ua, ub = normalize(a.to(_work_dtype(a))), normalize(b.to(_work_dtype(b)))
    t = torch.as_tensor(t, dtype=ua.dtype, device=ua.device)
    dot = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    if bool((dot < -1.0 + 1e-6).any()):
        raise ValueError("slerp between opposite identities is undefined; mix() them with weights instead")
    omega = torch.arccos(dot)
    sin_omega = torch.sin(omega)
    nearly_equal = sin_omega < 1e-6
    safe_sin = torch.where(nearly_equal, torch.ones_like(sin_omega), sin_omega)
    wa = torch.where(nearly_equal, 1.0 - t, torch.sin((1.0 - t) * omega) / safe_sin)
    wb = torch.where(nearly_equal, t, torch.sin(t * omega) / safe_sin)
    return normalize(wa * ua + wb * ub).to(dtype)


def mix(identities: torch.Tensor, weights: Optional[Union[Sequence[float], torch.Tensor]] = None) -> torch.Tensor:
    """Blend ``K`` identities (``K×D``) into one unit identity: the normalised weighted mean of
    their unit vectors.

    ``weights`` has shape ``K`` (one blend, result ``D``) or ``M×K`` (M blends, result ``M×D``);
    equal weights when omitted. Only the weights' ratios matter. Raises when the weighted vectors
    cancel out.
    """
    if identities.dim() != 2:
        raise ValueError(f"mix() takes a K×D tensor of identities, got shape {tuple(identities.shape)}")
    units = normalize(identities.to(_work_dtype(identities)))
    if weights is None:
        weights = torch.ones(units.shape[0])
    w = torch.as_tensor(weights, dtype=units.dtype, device=units.device)
    if w.shape[-1] != units.shape[0]:
        raise ValueError(f"{w.shape[-1]} weights for {units.shape[0]} identities")
    return normalize(w @ units).to(identities.dtype)


def random_identities(n: int, dim: int = 512, *, generator: Optional[torch.Generator] = None,
                      device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` unit vectors drawn uniformly on the sphere (normalised standard Gaussians).

    Random directions are a crude stand-in for real identities (real ArcFace embeddings occupy a
    small part of the sphere), but in 512 dimensions any two are nearly orthogonal, i.e. clearly
    different people to a recogniser, which is what a synthetic dataset needs.
    """
    noise_device = generator.device if generator is not None else device
    x = torch.randn(n, dim, generator=generator, device=noise_device, dtype=torch.float32)
    return normalize(x.to(device=device, dtype=dtype))


def perturb(identity: torch.Tensor, cosine: Number, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Unit vectors at exactly cosine similarity ``cosine`` to ``identity``, in a random direction.

    For each row ``u`` (unit) a random unit ``w`` orthogonal to ``u`` is drawn and the result is
    ``cosine·u + sqrt(1 − cosine²)·w``: a uniformly random point on the circle of that angular
    radius around ``u``. ``cosine`` may be a float or a per-row tensor (``N`` or ``N×1``); to land
    *within* a radius ``r`` rather than on it, draw the cosines from ``[r, 1]``.
    """
    single = identity.dim() == 1
    u = normalize(identity.to(_work_dtype(identity))).reshape(-1, identity.shape[-1])
    c = torch.as_tensor(cosine, dtype=u.dtype, device=u.device).reshape(-1, 1)
    if bool(((c < -1) | (c > 1)).any()):
        raise ValueError(f"cosine must lie in [-1, 1], got {cosine}")
    n = max(u.shape[0], c.shape[0])
    if u.shape[0] not in (1, n) or c.shape[0] not in (1, n):
        raise ValueError(f"{c.shape[0]} cosines for {u.shape[0]} identities")
    u = u.expand(n, -1)
    noise_device = generator.device if generator is not None else u.device
    noise = torch.randn(u.shape, generator=generator, device=noise_device, dtype=u.dtype).to(u.device)
    w = normalize(noise - (noise * u).sum(-1, keepdim=True) * u)  # Gram-Schmidt: drop the part along u
    out = normalize(c * u + torch.sqrt(1.0 - c * c) * w).to(identity.dtype)
    return out[0] if single and n == 1 else out
