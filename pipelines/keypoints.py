"""The IdentityNet's pose input: five face keypoints drawn as coloured dots joined to the nose.

InstantID's IdentityNet (a ControlNet) was trained on exactly this picture, so it must be drawn the
same way down to the pixel: on black, each of the four outer points (eyes, mouth corners) is joined
to the nose by a filled ellipse 2×4 px thick in that point's colour at 60 % brightness, then every
point is drawn as a filled disc of radius 10 px in its full colour, in landmark order.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

#: RGB colour of each landmark: left eye, right eye, nose tip, left and right mouth corner.
KEYPOINT_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
#: Every outer landmark is joined to the nose tip (index 2); a limb takes its outer point's colour.
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))
LIMB_HALF_WIDTH = 4
LIMB_BRIGHTNESS = 0.6
POINT_RADIUS = 10


def scale_keypoints(keypoints, scale: Sequence[float], offset: Sequence[float] = (0, 0)) -> np.ndarray:
    """``keypoints * scale + offset`` (``scale`` and ``offset`` per axis ``x, y``), computed in the
    keypoints' own float dtype (float64 for integers): insightface's keypoints are float32 and the
    reference implementations draw them in float32, where a limb midpoint can truncate to another
    pixel than in float64."""
    points = np.asarray(keypoints)
    dtype = points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64
    return points.astype(dtype) * np.asarray(scale, dtype) + np.asarray(offset, dtype)


def draw_keypoints(keypoints: Sequence[Sequence[float]], size: tuple[int, int]) -> Image.Image:
    """Draw 5 face keypoints (pixels, ``x, y``) on a black RGB image of ``size = (width, height)``."""
    # The arithmetic stays in the caller's dtype (insightface's float32), as InstantID's own drawing
    # does: a float32 midpoint can truncate to a different pixel than the float64 one.
    points = np.asarray(keypoints).reshape(5, 2)
    width, height = size
    limbs = np.zeros((height, width, 3), dtype=np.float64)
    for outer, nose in LIMBS:
        xs, ys = points[[outer, nose], 0], points[[outer, nose], 1]
        centre = (int(np.mean(xs)), int(np.mean(ys)))
        half_length = int(((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5 / 2)
        angle = int(math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1])))
        outline = cv2.ellipse2Poly(centre, (half_length, LIMB_HALF_WIDTH), angle, 0, 360, 1)
        cv2.fillConvexPoly(limbs, outline, KEYPOINT_COLORS[outer])
    canvas = (limbs * LIMB_BRIGHTNESS).astype(np.uint8)
    for (x, y), colour in zip(points, KEYPOINT_COLORS):
        cv2.circle(canvas, (int(x), int(y)), POINT_RADIUS, colour, -1)
    return Image.fromarray(canvas)
