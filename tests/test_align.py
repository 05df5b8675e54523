"""The one alignment implementation agrees with insightface's norm_crop."""

import numpy as np
import pytest

from idgen.faces import ARCFACE_TEMPLATE, align_face, load_image, similarity_transform


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = rng.uniform(0, 100, (5, 2))
    dst = src @ (scale * rotation).T + shift
    matrix = similarity_transform(src, dst)
    assert np.allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    assert np.allclose(matrix[:, 2], shift, atol=1e-9)


def test_mirrored_points_are_not_reflected():
    src = ARCFACE_TEMPLATE.copy()
    dst = src * np.array([-1.0, 1.0])
    matrix = similarity_transform(src, dst)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_matches_insightface_norm_crop(faces_dir):
    face_align = pytest.importorskip("insightface.utils.face_align")
    image = load_image(faces_dir / "Angelina_Jolie_0001.jpg")
    rng = np.random.default_rng(1)
    for _ in range(5):
        landmarks = (ARCFACE_TEMPLATE * 1.1 + 60 + rng.normal(0, 3, (5, 2))).astype(np.float32)
        ours = align_face(image, landmarks).astype(int)
        theirs = face_align.norm_crop(image, landmarks).astype(int)
        assert ours.shape == (112, 112, 3)
        assert np.abs(ours - theirs).max() <= 1


def test_crop_puts_landmarks_on_template():
    """A bright dot drawn at each landmark of a blank photo lands (within a pixel or two) on the
    matching template point of the 112² crop."""
    landmarks = np.array([[100, 110], [150, 108], [125, 140], [105, 165], [148, 163]], np.float32)
    for point, template in zip(landmarks.round().astype(int), ARCFACE_TEMPLATE):
        image = np.zeros((300, 260, 3), np.uint8)
        image[point[1] - 1: point[1] + 2, point[0] - 1: point[0] + 2] = 255
        crop = align_face(image, landmarks).astype(float).sum(-1)
        ys, xs = np.nonzero(crop > 0.2 * crop.max())
        found = np.array([np.average(xs, weights=crop[ys, xs]), np.average(ys, weights=crop[ys, xs])])
        # five points, four degrees of freedom: the fit leaves up to two pixels where these landmarks
        # are not an exact similarity image of the template
        assert np.abs(found - template).max() < 3   # measured 2.1; landmarks 8 px off give ~6
