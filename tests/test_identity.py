"""Identity operations: unit outputs, exact angles, reproducible randomness."""

import math

import pytest
import torch

from idgen.identity import mix, normalize, perturb, random_identities, slerp


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cos(a, b):
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_normalize_gives_unit_rows_and_rejects_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    assert torch.allclose(normalize(x), torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
    half = normalize(x.half())
    assert half.dtype == torch.float16 and torch.allclose(half.float().norm(dim=-1), torch.ones(2), atol=1e-3)
    with pytest.raises(ValueError, match="zero"):
        normalize(torch.zeros(3))


def test_slerp_endpoints_and_constant_angular_speed():
    a, b = random_identities(2, 64, generator=_gen(1), dtype=torch.float64)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-12)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-12)
    total = math.acos(float(a @ b))
    ts = torch.linspace(0, 1, 7, dtype=torch.float64)[:, None]
    path = slerp(a, b, ts)
    assert path.shape == (7, 64)
    assert torch.allclose(path.norm(dim=-1), torch.ones(7, dtype=torch.float64))
    angles = torch.arccos((path @ a).clamp(-1, 1))
    assert torch.allclose(angles, ts[:, 0] * total, atol=1e-9)
    # Every point lies in the plane spanned by a and b (on the great circle).
    basis = torch.linalg.qr(torch.stack([a, b], 1)).Q
    assert torch.allclose(path @ basis @ basis.T, path, atol=1e-12)


def test_slerp_between_equal_and_opposite_identities():
    a = random_identities(1, 16, generator=_gen(2))[0]
    assert torch.allclose(slerp(a, 5 * a, 0.3), a, atol=1e-6)
    with pytest.raises(ValueError, match="opposite"):
        slerp(a, -a, 0.5)


def test_mix_is_normalised_weighted_mean_of_unit_vectors():
    ids = random_identities(3, 32, generator=_gen(3), dtype=torch.float64) * torch.tensor([[1.0], [7.0], [0.2]],
                                                                                         dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    units = ids / ids.norm(dim=-1, keepdim=True)
    expected = sum(w * u for w, u in zip(weights, units))
    expected = expected / expected.norm()
    assert torch.allclose(mix(ids, weights), expected, atol=1e-12)
    assert torch.allclose(mix(ids, 10 * weights), expected, atol=1e-12)  # only ratios matter
    assert torch.allclose(mix(ids, [0.0, 1.0, 0.0]), units[1], atol=1e-12)
    many = mix(ids, torch.eye(3, dtype=torch.float64))
    assert torch.allclose(many, units, atol=1e-12)
    with pytest.raises(ValueError, match="2 weights for 3"):
        mix(ids, [1.0, 1.0])


def test_random_identities_are_unit_reproducible_and_spread():
    a = random_identities(200, 512, generator=_gen(4))
    b = random_identities(200, 512, generator=_gen(4))
    c = random_identities(200, 512, generator=_gen(5))
    assert a.shape == (200, 512) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.norm(dim=-1), torch.ones(200), atol=1e-6)
    off_diagonal = (a @ a.T)[~torch.eye(200, dtype=torch.bool)]
    # Uniform directions in 512-d: cosines ~ N(0, 1/512), so |cos| < 0.3 for every pair.
    assert off_diagonal.abs().max() < 0.3
    assert abs(float(off_diagonal.mean())) < 0.01
    assert random_identities(2, 8, dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_perturb_hits_the_requested_cosine_exactly(dtype, tol):
    ids = random_identities(5, 512, generator=_gen(6), dtype=dtype) * 3.0  # not unit on purpose
    for cosine in (0.9, 0.5, 0.0, -0.3):
        out = perturb(ids, cosine, generator=_gen(7))
        assert out.shape == ids.shape and out.dtype == dtype
        assert torch.allclose(out.norm(dim=-1), torch.ones(5, dtype=dtype), atol=tol)
        assert torch.allclose(_cos(out, ids), torch.full((5,), cosine, dtype=dtype), atol=tol)
    per_row = torch.tensor([0.95, 0.8, 0.7, 0.6, 0.4], dtype=dtype)
    assert torch.allclose(_cos(perturb(ids, per_row, generator=_gen(8)), ids), per_row, atol=tol)


def test_perturb_one_identity_many_times_is_random_and_reproducible():
    u = random_identities(1, 128, generator=_gen(9))[0]
    cosines = torch.full((50,), 0.7)
    a = perturb(u, cosines, generator=_gen(10))
    assert a.shape == (50, 128)
    assert torch.equal(a, perturb(u, cosines, generator=_gen(10)))
    assert perturb(u, 0.7, generator=_gen(10)).shape == (128,)
    # Directions away from u are spread out: their components orthogonal to u are nearly orthogonal.
    w = a - 0.7 * u
    w = w / w.norm(dim=-1, keepdim=True)
    assert (w @ w.T)[~torch.eye(50, dtype=torch.bool)].abs().max() < 0.5
    with pytest.raises(ValueError, match="cosine"):
        perturb(u, 1.5)
