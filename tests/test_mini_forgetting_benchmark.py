"""The bookkeeping of ``benchmarks/mini_forgetting.py``: photos grouped per person, render sets, and the
guard-evading request (the forgetting itself is tested in tests/test_generator_forgetting.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from idgen.guard import IdentityGuard

BENCHMARK = "mini_forgetting"   # the ``bench`` fixture (conftest.py) imports it


def test_photos_are_grouped_per_person_in_order_and_render_sets_skip_the_forget_photos(bench):
    files = [f"lfw/images/{name}/{name}_{i:04d}.jpg" for name, count in (("Ann", 6), ("Bob", 7)) for i in range(1, count + 1)]
    faces = SimpleNamespace(files=files, id_embeds=torch.arange(13.0)[:, None].repeat(1, 4))
    people = bench.people_by_name(faces)
    assert [len(people[n].files) for n in ("Ann", "Bob")] == [6, 7]
    assert people["Bob"].vectors[0, 0] == 6  # Bob's first photo is the 7th file
    render = bench.render_set([people["Ann"], people["Bob"]], slice(3, 6))  # photos 4-6
    assert render.owners.tolist() == [0, 0, 0, 1, 1, 1]
    assert render.vectors[:, 0].tolist() == [3, 4, 5, 9, 10, 11]
    assert render.render_files == {f"lfw/images/{n}/{n}_{i:04d}.jpg" for n in ("Ann", "Bob") for i in (4, 5, 6)}


def test_evading_moves_each_vector_just_far_enough_to_pass_the_guard(bench):
    e1, e2, e3 = torch.eye(3)
    guard = IdentityGuard(e1[None], threshold=0.5)
    vectors = torch.stack([0.8 * e1 + 0.6 * e2, e3])   # cosine 0.8 to the protected one, and 0 (passes already)
    moved = bench.evading(vectors, e1.expand(2, -1), guard)
    assert not guard.matches(moved)
    cosine = moved @ e1
    assert 0.48 < cosine[0] < 0.5                      # the smallest step on the 0.02 grid that passes
    torch.testing.assert_close(moved[1], e3)           # untouched
    assert np.isclose(float(moved[0] @ e2), float(np.sqrt(1 - cosine[0] ** 2)), atol=1e-6)  # moved only off e1
