"""The bookkeeping of ``benchmarks/mini_forgetting.py``: photos grouped per person, render sets, the
guard-evading request and the choice of the neutral identity (the forgetting itself is tested in
tests/test_generator_forgetting.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_sd import TEXT_WIDTH, tiny_pipeline

from idgen.guard import IdentityGuard
from idgen.identity import random_identities

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


class PresetAnalyzer:
    """Returns ``embeddings[k]`` (``None``: no face) for the ``k``-th batch of images it is given, so
    the expected choice is known here without trusting the benchmark's arithmetic."""

    recognizer = None   # no recogniser of its own: the pipeline has nothing to compare with its model's

    def __init__(self, embeddings):
        self.embeddings, self.images = list(embeddings), []

    def analyze_many(self, images, on_missing="skip", progress=True):
        self.images.append(images)
        return [None if e is None else SimpleNamespace(embedding=np.asarray(e)) for e in self.embeddings[len(self.images) - 1]]


def unit(*values):
    v = np.zeros(TEXT_WIDTH)
    v[:len(values)] = values
    return v / np.linalg.norm(v)


def test_choose_neutral_picks_the_candidate_whose_renders_resemble_the_population_least(bench, one_thread):
    pipe = tiny_pipeline()
    population = torch.tensor(np.stack([unit(1), unit(0, 1)]), dtype=torch.float32)
    pipe.set_face_analyzer(PresetAnalyzer([
        [unit(1), unit(0, 1)],           # each like one of them: mean cosine 0.5
        [unit(1, 0, 1), unit(1, 0, 1)],  # like the first: (0.707 + 0) / 2
        [unit(0, 0, 1), unit(0, 0, 1)],  # like nobody: 0
        [unit(1, 1, 5), None],           # one face found: 1/sqrt(27) to both
    ]))
    neutral, resemblance = bench.choose_neutral(pipe, population, candidates=4, renders=2, seed=3, steps=2, guidance=3.0)
    np.testing.assert_allclose(resemblance, [0.5, 0.5 ** 1.5, 0.0, 27 ** -0.5], atol=1e-6)
    torch.testing.assert_close(neutral, random_identities(4, TEXT_WIDTH, generator=torch.Generator().manual_seed(3))[2])
    images = pipe.face_analyzer.images
    assert [len(batch) for batch in images] == [2] * 4 and images[0][0].dtype == np.uint8
    assert not np.array_equal(images[0][0], images[0][1]) and not np.array_equal(images[0][0], images[1][0])

    pipe.set_face_analyzer(PresetAnalyzer([[None, None], [unit(1), unit(1)]]))  # a faceless candidate is passed over
    neutral, resemblance = bench.choose_neutral(pipe, population[:1], candidates=2, renders=2, steps=2, guidance=3.0)
    assert np.isnan(resemblance[0]) and resemblance[1] == pytest.approx(1.0)
    torch.testing.assert_close(neutral, random_identities(2, TEXT_WIDTH, generator=torch.Generator().manual_seed(0))[1])
    pipe.set_face_analyzer(PresetAnalyzer([[None, None], [None, None]]))
    with pytest.raises(RuntimeError, match="no face in any of the 4 renders"):
        bench.choose_neutral(pipe, population, candidates=2, renders=2, steps=2, guidance=3.0)
