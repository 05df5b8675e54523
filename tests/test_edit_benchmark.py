"""The score bookkeeping of ``benchmarks/edit_identity.py``: which gallery photo counts as the target,
which as the original person and which as unrelated people (the editing itself is tested in
tests/test_edit.py)."""

from __future__ import annotations

import numpy as np
import pytest

BENCHMARK = "edit_identity"   # the ``bench`` fixture (conftest.py) imports it


def test_similarities_split_target_original_and_unrelated(bench):
    gallery = np.eye(4) * 3.0                       # person k's photo 2: axis k (any length: cosines)
    probes = np.array([[1.0, 0, 0, 0],              # edit 0: A = 1, B = 0; looks exactly like B
                       [0, 1.0, 1.0, 0]])           # edit 1: A = 1, B = 2; halfway between A and B
    scores = bench.similarities(probes, gallery, targets=np.array([0, 2]), originals=np.array([1, 1]))
    assert scores["to_target_b"] == pytest.approx((1.0 + 0.5 ** 0.5) / 2)
    assert scores["to_original_a"] == pytest.approx((0.0 + 0.5 ** 0.5) / 2)
    # unrelated: edit 0 against people 2 and 3, edit 1 against 0 and 3: all orthogonal
    assert scores["to_unrelated"] == pytest.approx(0.0)
    assert scores["closer_to_b_than_a"] == pytest.approx(0.5)   # edit 1 is a tie, not closer


def test_similarities_unrelated_excludes_both_people(bench):
    gallery = np.eye(3)
    probes = np.array([[1.0, 1.0, 0.0]])            # A = 0, B = 1, only person 2 is unrelated
    scores = bench.similarities(probes, gallery, targets=np.array([1]), originals=np.array([0]))
    assert scores["to_unrelated"] == pytest.approx(0.0)
    assert scores["to_target_b"] == scores["to_original_a"] == pytest.approx(0.5 ** 0.5)
