"""The data bookkeeping of ``benchmarks/synthetic_fr.py``: the identity prior is one vector per
person, the real arm takes the people with the most photos and crops them as the embedded model
draws, and the mixed arm holds both sets without name clashes (the training and the evaluation
themselves are tested in tests/test_recognition.py and tests/test_verification.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from idgen.faces.align import face_template
from idgen.training.data import FaceFolder

BENCHMARK = "synthetic_fr"   # the ``bench`` fixture (conftest.py) imports it


@pytest.fixture
def photos(tmp_path):
    """Three people with 3, 1 and 2 photos of 100×100 pixels (smooth colour ramps); the landmarks of
    every photo are the recognisers' template, so the aligned crop is a known view of the photo."""
    files, vectors = [], []
    ramp = np.arange(100, dtype=np.uint8) * 2
    for name, count, axis in (("Ann", 3, 0), ("Bob", 1, 1), ("Cy", 2, 2)):
        for n in range(count):
            path = tmp_path / "lfw" / name / f"{name}_{n + 1:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.stack([np.tile(ramp, (100, 1)), np.tile(ramp[:, None], (1, 100)),
                                      np.full((100, 100), 40 * n, np.uint8)], axis=-1)).save(path)
            files.append(str(path))
            vector = torch.zeros(4)
            vector[axis], vector[3] = 2.0, float(n)   # not unit length; the person's photos differ
            vectors.append(vector)
    landmarks = torch.from_numpy(face_template(100)).float().expand(len(files), 5, 2)
    return FaceFolder(files, torch.stack(vectors), landmarks)


def test_prior_has_one_unit_vector_per_person(bench, photos, tmp_path):
    assert bench.write_prior(photos, tmp_path / "prior.safetensors") == 3
    normed = load_file(tmp_path / "prior.safetensors")["normed"]
    assert normed.shape == (3, 4)
    assert torch.allclose(normed.norm(dim=1), torch.ones(3))
    ann = torch.nn.functional.normalize(photos.id_embeds[:3], dim=1).mean(0)   # Ann: the mean of her 3 photos
    assert torch.allclose(normed[0], ann / ann.norm(), atol=1e-6)


def test_real_arm_takes_people_with_most_photos_as_aligned_crops(bench, photos, tmp_path):
    out = tmp_path / "real"
    summary = bench.write_real(photos, out, total=4, min_photos=2, per_person=2)
    assert summary == {"images": 4, "identities": 2}    # Ann (2 of her 3) then Cy; Bob has too few
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "Ann/Ann_0001.png", "Ann/Ann_0002.png", "Cy/Cy_0001.png", "Cy/Cy_0002.png"]
    crop = np.asarray(Image.open(out / "Ann" / "Ann_0001.png"))
    assert crop.shape == (64, 64, 3)
    # landmarks on the recognisers' template, the crop on the embedded model's (shrunk by 0.8): the
    # whole photo, with a black border of 12.5 % of the photo's side around it
    padded = Image.new("RGB", (125, 125))
    padded.paste(Image.open(photos.files[0]).convert("RGB"), (12, 12))
    expected = np.asarray(padded.resize((64, 64), Image.BILINEAR))
    assert np.abs(crop[4:-4, 4:-4].astype(int) - expected[4:-4, 4:-4].astype(int)).mean() < 4
    assert crop[:4].max() == 0 and crop[-4:].max() == 0


def test_mixed_arm_links_both_sets_with_prefixes(bench, tmp_path):
    for folder, names in (("syn", ["id000000", "id000001"]), ("real", ["Ann"])):
        for name in names:
            (tmp_path / folder / name).mkdir(parents=True)
            (tmp_path / folder / name / "0.jpg").write_bytes(b"x")
    bench.link_union({"synthetic": tmp_path / "syn", "real": tmp_path / "real"}, tmp_path / "mixed")
    bench.link_union({"synthetic": tmp_path / "syn", "real": tmp_path / "real"}, tmp_path / "mixed")   # again: no error
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir()) == [
        "real-Ann", "synthetic-id000000", "synthetic-id000001"]
    assert (tmp_path / "mixed" / "real-Ann" / "0.jpg").read_bytes() == b"x"
