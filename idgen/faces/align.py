"""Five-point face alignment to the ArcFace 112×112 template.

Every ArcFace-style recogniser (insightface, Arc2Face's ``arcface.onnx``, MobileFaceNet) was
trained on crops made by the same recipe: a similarity transform (rotation, uniform scale,
translation) that maps the five detected landmarks as closely as possible, in the least-squares
sense, onto fixed template points. This is the one implementation used throughout idgen.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Template landmarks in a 112×112 crop: left eye, right eye, nose tip, left and right mouth corner
#: ("left" = the image's left).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def center_box(height: int, width: int, fraction: float) -> np.ndarray:
    """The centred square (x1, y1, x2, y2) whose side is ``fraction`` of the image's shorter side:
    where a face sits in a pre-centred photo (LFW) when the detector misses it."""
    side = fraction * min(height, width)
    cx, cy = width / 2.0, height / 2.0
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def template_in_box(box: np.ndarray) -> np.ndarray:
    """The five template points placed in a square ``box`` (x1, y1, x2, y2): where the landmarks of a
    face filling the box would be. Used for faces that are known to be there but not detected."""
    return box[:2] + ARCFACE_TEMPLATE / 112.0 * (box[2] - box[0])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama, 1991) taking ``src`` points onto ``dst``.

    Returns the 2×3 affine matrix. Reflections are excluded, so a mirrored face is never
    "aligned" by flipping it.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"need two N×2 point sets of the same shape, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(covariance) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = (singular * sign).sum() / src_var if src_var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def face_template(size: int = 112, scale: float = 1.0) -> np.ndarray:
    """The ArcFace template for a ``size``×``size`` crop, shrunk by ``scale`` about the crop centre.

    ``scale`` 1.0 is the recognisers' tight crop (chin to brows); 0.8 leaves room for hair and chin
    and puts the eyes where FFHQ-aligned portraits have them (≈ 37 % / 63 % across, 47 % down).
    """
    return ((ARCFACE_TEMPLATE / 112.0 - 0.5) * scale + 0.5) * size


def alignment_matrix(landmarks: np.ndarray, size: int = 112, scale: float = 1.0) -> np.ndarray:
    """The 2×3 matrix mapping image coordinates to a ``size``×``size`` aligned crop."""
    return similarity_transform(landmarks, face_template(size, scale))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112, scale: float = 1.0) -> np.ndarray:
    """Warp ``image`` (H×W×C) so the five ``landmarks`` land on the (scaled) ArcFace template."""
    matrix = alignment_matrix(landmarks, size, scale)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
