"""Synthetic occlusion of aligned face crops, for measuring how a recogniser copes with them.

Each occluder takes an H×W×3 ``uint8`` crop aligned to the ArcFace template (see
:mod:`idgen.faces.align`; any square size, the template is scaled to it), a ``severity`` and a
``numpy`` random generator, and returns an occluded copy (the input is left as it is):

- ``patch``: random rectangles of random colours whose union covers ``severity`` of the crop's area
  (to the pixel);
- ``glasses``: a dark full-width band centred on the eyes, ``severity`` of the crop's height;
- ``mask``: a light full-width band centred between the nose tip and the mouth, ``severity`` of the
  crop's height (at most 0.4, so the eye rows stay visible);
- ``noise``: Gaussian noise of standard deviation ``severity`` × 255 on every pixel, clipped to 0–255.

The same generator state gives the same occluded pixels; :class:`Occlusion` seeds one per crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .align import ARCFACE_TEMPLATE

#: Accepted ``severity`` per occlusion, inclusive: a fraction of the crop (area for ``patch``, height for
#: the bands) or the noise standard deviation as a fraction of the 0–255 range.
SEVERITY_RANGE = {"patch": (0.10, 0.40), "glasses": (0.05, 0.40), "mask": (0.05, 0.40), "noise": (0.01, 0.50)}

#: Grey level of the sunglasses band and of the mask band.
GLASSES_LEVEL, MASK_LEVEL = 20, 225


def check_severity(kind: str, severity: float) -> None:
    """Raise :class:`ConfigError` naming ``--occlude``/``--severity`` unless ``kind`` is a known occlusion
    and ``severity`` lies in its :data:`SEVERITY_RANGE`."""
    if kind not in SEVERITY_RANGE:
        raise ConfigError(f"--occlude {kind!r} is not an occlusion; use one of {', '.join(SEVERITY_RANGE)}")
    low, high = SEVERITY_RANGE[kind]
    if not low <= severity <= high:
        raise ConfigError(f"--severity {severity} is out of range for --occlude {kind}: give a value in "
                          f"[{low}, {high}]")


def _band(crop: np.ndarray, centre_y: float, severity: float, level: int) -> np.ndarray:
    """A copy of ``crop`` with a full-width band of grey ``level``, ``severity`` of its height, centred on
    ``centre_y`` (a row of the 112-pixel template)."""
    size = crop.shape[0]
    rows = round(severity * size)
    top = min(max(round(centre_y / 112.0 * size - rows / 2), 0), size - rows)
    out = crop.copy()
    out[top: top + rows] = level
    return out


def glasses(crop: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """A dark band over both eyes (``rng`` unused: the band is fixed by the template)."""
    return _band(crop, ARCFACE_TEMPLATE[:2, 1].mean(), severity, GLASSES_LEVEL)


def mask(crop: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """A light band over nose and mouth (``rng`` unused: the band is fixed by the template)."""
    return _band(crop, (ARCFACE_TEMPLATE[2, 1] + ARCFACE_TEMPLATE[3:, 1].mean()) / 2, severity, MASK_LEVEL)


def patch(crop: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Random rectangles, each of one random colour, until their union covers ``severity`` of the area.

    Each rectangle's area is at most what is still to cover, so the union covers the target number of
    pixels exactly."""
    height, width = crop.shape[:2]
    covered = np.zeros((height, width), bool)
    target = round(severity * height * width)
    out = crop.copy()
    while covered.sum() < target:
        remaining = target - covered.sum()
        area = max(1.0, rng.uniform(0.3, 1.0) * remaining)
        side_w = int(np.clip(round(np.sqrt(area * rng.uniform(0.5, 2.0))), 1, width))
        side_h = int(np.clip(area // side_w, 1, height))
        x, y = rng.integers(0, width - side_w + 1), rng.integers(0, height - side_h + 1)
        out[y: y + side_h, x: x + side_w] = rng.integers(0, 256, size=3, dtype=np.uint8)
        covered[y: y + side_h, x: x + side_w] = True
    return out


def noise(crop: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with standard deviation ``severity`` × 255 added to every pixel, clipped to 0–255."""
    noisy = crop.astype(np.float32) + rng.normal(0.0, severity * 255.0, size=crop.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


OCCLUDERS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "patch": patch, "glasses": glasses, "mask": mask, "noise": noise,
}


@dataclass(frozen=True)
class Occlusion:
    """One occlusion setting: ``kind`` (a key of :data:`OCCLUDERS`) at ``severity`` (range-checked on
    construction), drawn from generators seeded with ``seed``."""

    kind: str
    severity: float
    seed: int = 0

    def __post_init__(self):
        check_severity(self.kind, self.severity)

    def __call__(self, crop: np.ndarray, index: int = 0) -> np.ndarray:
        """``crop`` occluded, drawn from the generator seeded with ``(seed, index)``: the same setting and
        ``index`` (e.g. the number of a pair) give the same pixels."""
        return OCCLUDERS[self.kind](np.asarray(crop), self.severity, np.random.default_rng([self.seed, index]))

    def describe(self) -> str:
        return f"{self.kind} at severity {self.severity:g}, seed {self.seed}"
