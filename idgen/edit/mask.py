"""Soft masks around faces: where an edit may change the photo, and by how much.

The mask is an ellipse fitted to the face — centred on the box, tilted with the eye line, its axes
the box's half-sides times ``grow`` — that is 1 inside and falls smoothly to exactly 0 over a
feather band of ``feather`` × the axes. Being *exactly* 0 beyond the band is what lets an edit
promise that every pixel outside it is the input pixel, bit for bit.
"""

from __future__ import annotations

import numpy as np

from idgen.faces import Face

#: Ellipse axes as multiples of the box's half width / height (dlib and SCRFD boxes stop at the
#: brows and the chin; the extra covers forehead and jaw line).
DEFAULT_GROW = 1.25
#: Width of the soft edge as a fraction of the ellipse axes.
DEFAULT_FEATHER = 0.35


def face_mask(shape: tuple[int, ...], face: Face, grow: float = DEFAULT_GROW,
              feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """``H×W`` float32 mask in [0, 1] for ``face`` in an image of ``shape`` (``H, W[, C]``)."""
    height, width = shape[:2]
    x1, y1, x2, y2 = np.asarray(face.bbox, dtype=np.float64)
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    axes = np.array([(x2 - x1) / 2, (y2 - y1) / 2]) * grow
    left_eye, right_eye = np.asarray(face.landmarks, dtype=np.float64)[:2]
    dx, dy = right_eye - left_eye
    angle = np.arctan2(dy, dx)  # roll of the head: the ellipse turns with the eye line

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xs - center[0]) * cos + (ys - center[1]) * sin) / axes[0]
    v = (-(xs - center[0]) * sin + (ys - center[1]) * cos) / axes[1]
    radius = np.sqrt(u**2 + v**2)  # 1 on the ellipse
    ramp = np.clip((1.0 + feather - radius) / feather, 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)  # smoothstep: no visible seam
