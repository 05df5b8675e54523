"""benchmarks/edgeface_cost.py's parts on small inputs: which networks, their FLOPs, one latency per network."""

from __future__ import annotations

import pytest

BENCHMARK = "edgeface_cost"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_networks_side_by_side_and_their_costs(bench):
    models = bench.networks(["xxs"])
    assert list(models) == ["mobilefacenet", "edgeface-xxs"] and not any(m.training for m in models.values())
    assert models["mobilefacenet"].config["embedding_size"] == 128 and models["edgeface-xxs"].config["resolution"] == 112
    # 2 FLOPs per multiply-add: the embedding layer of EdgeFace-XXS alone is 168 × 512 of them
    assert bench.mflops(models["edgeface-xxs"], 32) > 2 * 168 * 512 / 1e6
    assert bench.mflops(models["mobilefacenet"]) == pytest.approx(441.9, abs=0.05)
    times = bench.latencies(models, batch=1, rounds=1, calls=1)
    assert set(times) == set(models) and all(t > 0 for t in times.values())
