"""Identity sampling: packing on the hypersphere meets its similarity target, checked by brute force."""

from pathlib import Path

import numpy as np
import pytest
import torch

from idgen.identity import random_identities
from idgen.synth.identities import (GaussianPrior, perturb_within_cosine, sample_identities, scan_pairs,
                                    similarity_stats)

ROOT = Path(__file__).resolve().parents[1]


def gram_max_mean(x):
    gram = (x.double() @ x.double().T).numpy()
    off = gram[~np.eye(len(gram), dtype=bool)]
    return off.max(), off.mean()


def test_repulsion_meets_target_that_random_points_miss():
    n, dim, target = 400, 32, 0.45
    random_max, _ = gram_max_mean(random_identities(n, dim, generator=torch.Generator().manual_seed(0)))
    assert random_max > target + 0.1  # the target is not met by chance

    vectors, stats = sample_identities(n, dim, target, seed=0, neighbors=8)
    norms = vectors.norm(dim=1)
    assert torch.allclose(norms, torch.ones(n), atol=1e-5)
    true_max, true_mean = gram_max_mean(vectors)
    assert true_max <= target + 1e-5
    assert stats.max_cosine == pytest.approx(true_max, abs=1e-5)
    assert stats.mean_cosine == pytest.approx(true_mean, abs=1e-6)
    assert stats.iterations > 0


def test_sampling_is_deterministic_per_seed():
    a, _ = sample_identities(100, 16, 0.6, seed=3)
    b, _ = sample_identities(100, 16, 0.6, seed=3)
    c, _ = sample_identities(100, 16, 0.6, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_chunked_pair_scan_matches_brute_force():
    x = random_identities(300, 24, generator=torch.Generator().manual_seed(1))
    gram = x @ x.T
    gram.fill_diagonal_(-2)
    threshold = 0.45
    close = (gram > threshold).nonzero()
    expected = set(map(tuple, close.tolist()))
    assert len(expected) > 40 and int((gram > threshold).sum(1).max()) > 2
    pairs, stats = scan_pairs(x, threshold, neighbors=300, chunk=64)
    assert set(map(tuple, pairs.T.tolist())) == expected and pairs.shape[1] == len(expected)
    true_max, true_mean = gram_max_mean(x)
    assert stats.max_cosine == pytest.approx(true_max, abs=1e-6)
    assert stats.mean_cosine == pytest.approx(true_mean, abs=1e-6)
    assert stats.mean_nearest_cosine == pytest.approx(float(gram.max(1).values.mean()), abs=1e-6)
    assert similarity_stats(x, chunk=64).max_cosine == stats.max_cosine
    # a partner list is capped at `neighbors`, closest first
    capped, _ = scan_pairs(x, threshold, neighbors=2, chunk=64)
    sources, counts = torch.unique_consecutive(capped[0], return_counts=True)
    assert counts.max() == 2 and set(map(tuple, capped.T.tolist())) <= expected
    for i in sources.tolist():
        partners = capped[1][capped[0] == i]
        assert (gram[i, partners][:-1] >= gram[i, partners][1:]).all()


def test_perturbation_stays_inside_the_cosine_radius():
    x = random_identities(500, 64, generator=torch.Generator().manual_seed(2))
    y = perturb_within_cosine(x, 0.8, torch.Generator().manual_seed(5))
    cosines = (x * y).sum(1)
    assert torch.allclose(y.norm(dim=1), torch.ones(500), atol=1e-5)
    assert cosines.min() >= 0.8 - 1e-5 and cosines.max() <= 1 + 1e-5
    assert cosines.std() > 0.03  # spread over the radius, not pinned to one value


def test_prior_draws_identities_where_real_embeddings_are():
    generator = torch.Generator().manual_seed(0)
    centre = random_identities(1, 64, generator=generator)[0]
    real = torch.nn.functional.normalize(centre + 0.1 * torch.randn(200, 64, generator=generator), dim=1)
    prior = GaussianPrior.fit(real)
    drawn, stats = sample_identities(50, 64, 0.95, seed=0, prior=prior)
    uniform = random_identities(50, 64, generator=generator)
    assert float((drawn @ centre).mean()) > 0.5
    assert abs(float((uniform @ centre).mean())) < 0.1
    assert stats.max_cosine <= 0.95 + 1e-5


def test_dataset_identities_are_drawn_near_the_configured_prior(tmp_path):
    """``identities.prior`` names a safetensors file of real embeddings (as ``idgen embed`` writes)."""
    from safetensors.torch import load_file, save_file

    from idgen.synth import SynthConfig, generate_dataset

    generator = torch.Generator().manual_seed(0)
    centre = random_identities(1, 32, generator=generator)[0]
    real = torch.nn.functional.normalize(centre + 0.15 * torch.randn(100, 32, generator=generator), dim=1)
    save_file({"normed": real}, str(tmp_path / "real.safetensors"))
    config = SynthConfig.from_dict({
        "output_dir": str(tmp_path / "ds"), "generator": {"type": "photo", "photos": str(ROOT / "tests" / "data" / "faces")},
        "identities": {"count": 6, "dim": 32, "max_cosine": 0.9, "prior": str(tmp_path / "real.safetensors")},
        "variation": {"images_per_identity": 1}, "filter": {"enabled": False}, "writers": {"formats": ["imagefolder"]},
        "runtime": {"progress": False, "device": "cpu"},
    })
    stats = generate_dataset(config)
    identities = load_file(str(tmp_path / "ds" / "identities.safetensors"))["identities"]
    assert float((identities @ centre).min()) > 0.5
    assert stats["identities"]["max_cosine"] <= 0.9 and stats["images"] == 6


def test_an_identity_prior_file_that_is_not_safetensors_is_refused_naming_it(tmp_path):
    from hostile_files import pickle_running_code

    from idgen.errors import DataError
    from idgen.synth import SynthConfig, generate_dataset

    pickle_running_code(tmp_path / "real.safetensors", tmp_path / "ran")
    config = SynthConfig.from_dict({
        "output_dir": str(tmp_path / "ds"), "generator": {"type": "photo", "photos": str(ROOT / "tests" / "data" / "faces")},
        "identities": {"count": 6, "dim": 32, "max_cosine": 0.9, "prior": str(tmp_path / "real.safetensors")},
        "variation": {"images_per_identity": 1}, "filter": {"enabled": False}, "writers": {"formats": ["imagefolder"]},
        "runtime": {"progress": False, "device": "cpu"},
    })
    with pytest.raises(DataError, match=r"real.safetensors: a pickle \(torch.save\) file, not safetensors.*idgen embed"):
        generate_dataset(config)
    assert not (tmp_path / "ran").exists()
