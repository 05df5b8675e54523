"""Synthetic occlusion of aligned crops (idgen.faces.occlusion) and ``idgen eval verify --occlude``."""

import json

import numpy as np
import pytest

from idgen.errors import ConfigError
from idgen.faces.align import ARCFACE_TEMPLATE
from idgen.faces.occlusion import OCCLUDERS, SEVERITY_RANGE, Occlusion

SIZE = 112
EYE_ROW = round(ARCFACE_TEMPLATE[:2, 1].mean())         # 52
NOSE_ROW = round(ARCFACE_TEMPLATE[2, 1])                # 72
MOUTH_ROW = round(ARCFACE_TEMPLATE[3:, 1].mean())       # 92


def _crop(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Pixels (H×W) where any channel differs."""
    return (before != after).any(axis=2)


@pytest.mark.parametrize("severity", [0.1, 0.25, 0.4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patch_covers_the_stated_fraction_of_the_area(severity, seed):
    crop = _crop()
    covered = _changed(crop, Occlusion("patch", severity, seed)(crop)).mean()
    # a rectangle's random colour can equal a pixel it covers (odds 2^-24 per pixel), hence the slack
    assert abs(covered - severity) <= 3 / SIZE**2


def test_patch_draws_several_rectangles_at_random_places():
    crop = _crop()
    boxes = set()
    for index in range(5):
        rows, cols = np.nonzero(_changed(crop, Occlusion("patch", 0.3, 0)(crop, index)))
        boxes.add((rows.min(), rows.max(), cols.min(), cols.max()))
    assert len(boxes) == 5


@pytest.mark.parametrize("severity", [0.05, 0.2, 0.4])
def test_glasses_band_covers_the_eyes_and_leaves_the_mouth(severity):
    crop = _crop()
    out = Occlusion("glasses", severity)(crop)
    rows = np.nonzero(_changed(crop, out).any(axis=1))[0]
    assert len(rows) == round(severity * SIZE) and np.all(np.diff(rows) == 1)   # one full band ...
    assert _changed(crop, out)[rows].all()                                      # ... across the whole width
    assert rows.min() <= EYE_ROW <= rows.max()
    assert (out[rows] <= 20).all()                                              # dark
    assert np.array_equal(out[NOSE_ROW + 8:], crop[NOSE_ROW + 8:])              # mouth and chin untouched


@pytest.mark.parametrize("severity", [0.2, 0.4])
def test_mask_band_covers_nose_and_mouth_and_leaves_the_eyes(severity):
    crop = _crop()
    out = Occlusion("mask", severity)(crop)
    rows = np.nonzero(_changed(crop, out).any(axis=1))[0]
    assert len(rows) == round(severity * SIZE) and np.all(np.diff(rows) == 1)
    assert rows.min() <= NOSE_ROW and MOUTH_ROW <= rows.max()
    assert np.array_equal(out[:EYE_ROW + 4], crop[:EYE_ROW + 4])                # eyes and brows untouched


def test_bands_scale_with_the_crop_size():
    crop = np.zeros((224, 224, 3), np.uint8)
    rows = np.nonzero((Occlusion("glasses", 0.25)(crop + 128) != 128).any(axis=(1, 2)))[0]
    assert len(rows) == 56 and rows.min() <= 2 * EYE_ROW <= rows.max()


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_noise_has_the_stated_standard_deviation(sigma):
    crop = np.full((SIZE, SIZE, 3), 128, np.uint8)
    difference = Occlusion("noise", sigma)(crop).astype(float) - 128
    assert abs(difference.std() / 255 - sigma) < 0.03 * sigma
    assert abs(difference.mean()) < 0.5


@pytest.mark.parametrize("kind", sorted(OCCLUDERS))
def test_same_seed_same_pixels_and_input_left_alone(kind):
    crop = _crop()
    original = crop.copy()
    severity = SEVERITY_RANGE[kind][1]
    assert np.array_equal(Occlusion(kind, severity, 5)(crop, 3), Occlusion(kind, severity, 5)(crop, 3))
    assert np.array_equal(crop, original)


@pytest.mark.parametrize("kind", ["patch", "noise"])
def test_different_seeds_or_indices_differ(kind):
    crop = _crop()
    first = Occlusion(kind, 0.2, 0)(crop, 0)
    assert not np.array_equal(first, Occlusion(kind, 0.2, 1)(crop, 0))
    assert not np.array_equal(first, Occlusion(kind, 0.2, 0)(crop, 1))


@pytest.mark.parametrize("kind,severity", [("patch", 0.05), ("patch", 0.41), ("glasses", 0.5), ("mask", 0.0),
                                           ("noise", 0.6), ("noise", -0.1)])
def test_severity_out_of_range_is_a_config_error_naming_the_flag(kind, severity):
    low, high = SEVERITY_RANGE[kind]
    with pytest.raises(ConfigError, match=rf"--severity {severity} .*--occlude {kind}.*\[{low}, {high}\]"):
        Occlusion(kind, severity)


def test_unknown_occlusion_is_a_config_error():
    with pytest.raises(ConfigError, match="--occlude 'scarf'.*patch, glasses, mask, noise"):
        Occlusion("scarf", 0.2)


def test_cli_offers_every_occluder(capsys):
    from idgen.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "verify", "--occlude", "scarf"])
    offered = capsys.readouterr().err.split("choose from", 1)[1]
    assert all(repr(kind) in offered for kind in OCCLUDERS)


# ---------------------------------------------------------------------------------- the command line
@pytest.fixture
def photo_pairs(tmp_path, faces_dir):
    """The vendored photos in LFW's layout and a pairs file of 3 matched and 3 mismatched pairs."""
    images = tmp_path / "images"
    for photo in faces_dir.glob("*.jpg"):
        name = photo.stem.rsplit("_", 1)[0]
        (images / name).mkdir(parents=True, exist_ok=True)
        (images / name / photo.name).symlink_to(photo)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 3\nAaron_Peirsol 1 2\nAaron_Peirsol 1 3\nAaron_Peirsol 2 3\n"
                     "Aaron_Peirsol 1 Abdullah_Gul 1\nAbdullah_Gul 1 Angelina_Jolie 1\nAaron_Peirsol 2 Angelina_Jolie 1\n")
    return pairs, images


def _verify(capsys, pairs, images, *extra):
    from idgen.cli import main

    pytest.importorskip("dlib")
    assert main(["eval", "verify", "--pairs", str(pairs), "--images", str(images), "--recognizer", "mobilefacenet",
                 "--fallback-box", "0.42", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_verify_with_occlusion_is_seeded(capsys, photo_pairs):
    """Thresholds are midpoints of pair scores, so they show whether the scores changed."""
    clean = _verify(capsys, *photo_pairs)
    occluded = _verify(capsys, *photo_pairs, "--occlude", "patch", "--severity", "0.4", "--occlusion-seed", "3")
    again = _verify(capsys, *photo_pairs, "--occlude", "patch", "--severity", "0.4", "--occlusion-seed", "3")
    other = _verify(capsys, *photo_pairs, "--occlude", "patch", "--severity", "0.4", "--occlusion-seed", "4")
    assert clean["occlusion"] is None and clean["pairs"] == occluded["pairs"] == 6
    assert occluded["occlusion"] == {"kind": "patch", "severity": 0.4, "seed": 3}
    assert occluded["thresholds"] != clean["thresholds"]
    assert occluded == again
    assert other["thresholds"] != occluded["thresholds"]


@pytest.mark.parametrize("extra,message", [
    (["--occlude", "mask", "--severity", "0.9"], "--severity 0.9 is out of range for --occlude mask"),
    (["--occlude", "mask"], "--occlude and --severity go together"),
    (["--severity", "0.2"], "--occlude and --severity go together"),
])
def test_cli_refuses_bad_occlusion_before_loading_models(capsys, photo_pairs, extra, message):
    from idgen.cli import main

    pairs, images = photo_pairs
    assert main(["eval", "verify", "--pairs", str(pairs), "--images", str(images), "--recognizer",
                 "/nonexistent.onnx", *extra]) != 0
    assert message in capsys.readouterr().err
