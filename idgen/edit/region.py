"""Where an edit happens: a square crop around a face, and the blend that pastes the result back.

Diffusion runs on a crop resized to the pipeline's resolution; the generated crop is resized back
to the crop's full-resolution size and blended in through the soft mask, so the rest of the photo
keeps every pixel and its original resolution.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from idgen.faces import Face

#: Side of the crop as a multiple of the face box's longer side: room for the feathered mask
#: (about 1.7× the box) plus context for the model.
DEFAULT_CONTEXT = 2.0


def crop_box(face: Face, shape: tuple[int, ...], context: float = DEFAULT_CONTEXT) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of a square around ``face``, shifted (not shrunk) to stay inside the
    image; only an image smaller than the square shrinks it to the image's shorter side."""
    height, width = shape[:2]
    x1, y1, x2, y2 = np.asarray(face.bbox, dtype=np.float64)
    side = int(min(round(context * max(x2 - x1, y2 - y1)), height, width))
    x0 = int(np.clip(round((x1 + x2) / 2 - side / 2), 0, width - side))
    y0 = int(np.clip(round((y1 + y2) / 2 - side / 2), 0, height - side))
    return x0, y0, side


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB array → ``size`` = (width, height), bicubic."""
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))


def blend(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``original + mask · (generated − original)`` in uint8: where ``mask`` is 0 the result *is*
    ``original``, where it is 1 it is ``generated``."""
    weight = mask[..., None].astype(np.float32)
    mixed = original.astype(np.float32) + weight * (generated.astype(np.float32) - original.astype(np.float32))
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
