"""``benchmarks/mini_denoiser.py`` compares like with like: every candidate maps the mini model's inputs
to a noise prediction of the latents' shape, and its FLOP count is the network's, not a guess."""

from __future__ import annotations

import pytest
import torch

BENCHMARK = "mini_denoiser"   # the ``bench`` fixture (conftest.py) imports it


@pytest.fixture(scope="module")
def models(bench):
    torch.manual_seed(0)
    return bench.candidates()


def test_every_candidate_predicts_noise_of_the_latents_shape(bench, models):
    batch = bench.random_batch(2, torch.Generator().manual_seed(0))
    for name, model in models.items():
        with torch.no_grad():
            assert bench.predict(model, *batch).shape == batch[0].shape, name


def test_flops_are_counted_per_sample_and_the_small_transformer_matches_the_unet(bench, models):
    one, two = (bench.random_batch(n, torch.Generator().manual_seed(0)) for n in (1, 2))
    unet = bench.forward_gflop(models["unet"], one)
    assert bench.forward_gflop(models["unet"], two) == pytest.approx(unet, rel=1e-6)
    assert unet == pytest.approx(0.80, abs=0.01)    # the shipped UNet's 0.80 GFLOP per sample-step
    assert bench.forward_gflop(models["dit-t/2"], one) == pytest.approx(unet, rel=0.5)
    assert bench.forward_gflop(models["dit-s/1"], one) > 3 * bench.forward_gflop(models["dit-s/2"], one)


def test_a_training_step_changes_the_weights_in_both_precisions(bench, models):
    batch = bench.random_batch(2, torch.Generator().manual_seed(0))
    model = models["dit-t/2"]
    for bf16 in (False, True):
        before = [p.detach().clone() for p in model.parameters()]
        bench.Trainer(model, batch, bf16).step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), bf16
