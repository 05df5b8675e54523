"""Aligned face crops of a face set, cached on disk by what the photos contain.

Every recogniser trainer (``idgen recognizer train`` for both backbones, ``idgen forget``) starts
by aligning each photo to the ArcFace template, which with dlib means one detection per photo:
minutes for LFW. They all get their crops from :func:`aligned_crops`, which keeps them in one
safetensors file per :class:`Alignment` in ``cache_dir``, one tensor per photo named by the SHA-256
of the photo's bytes. Keying by content, not by path, means an edited photo (same path, new bytes)
is aligned again instead of served stale, while a renamed or moved folder keeps its crops and a
photo shared by two face sets is aligned once. Each photo is read once: its bytes are hashed and,
on a miss, decoded from the same bytes. New crops are added by rewriting the file atomically
(:mod:`idgen.io`), so a killed run never leaves a half-written cache.

This module lives in :mod:`idgen.faces` so that :mod:`idgen.recognition` (both trainers) and
the face analysis share it.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ConfigError, ImageReadError
from ..io import open_safetensors, save_safetensors_atomic
from .align import align_face, center_box, template_in_box
from .image import decode_image, read_image_bytes

METHODS = ("dlib", "box", "resize")


@dataclass(frozen=True)
class Alignment:
    """How a photo becomes a ``size``×``size`` crop.

    ``method="dlib"``: dlib's five landmarks onto the ArcFace template, detected after ``upsample``
    doublings; where dlib finds no face, its landmarks inside the centred square of ``box`` × the
    shorter side (no ``box``: an error). ``"box"``: the template placed in that centred square, for
    sets that are already aligned. ``"resize"``: the whole photo resized, for pre-cropped sets (ORL).
    """

    method: str = "dlib"
    size: int = 112
    box: Optional[float] = 0.42
    upsample: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown alignment {self.method!r}; use one of {METHODS}")
        if self.method == "box" and not self.box:
            raise ConfigError("box alignment needs a box size (a fraction of the shorter side)")

    def settings(self) -> dict:
        """The settings that change the crops: the cache key, with the photos' contents."""
        ignored = {"dlib": (), "box": ("upsample",), "resize": ("box", "upsample")}[self.method]
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    def cache_file(self, cache_dir: str | os.PathLike) -> Path:
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]
        return Path(cache_dir) / f"crops-{self.method}-{self.size}-{digest}.safetensors"

    def aligner(self) -> Callable[[np.ndarray, str], np.ndarray]:
        """``align(rgb, name) -> crop``; for dlib this loads the detector, so call it only on a miss."""
        size = self.size
        if self.method == "resize":
            return lambda rgb, name: np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
        if self.method == "box":
            return lambda rgb, name: align_face(rgb, template_in_box(center_box(*rgb.shape[:2], self.box)), size)
        from .analyzer import FaceAnalyzer

        analyzer = FaceAnalyzer.from_backend("dlib", None, fallback_box=self.box, upsample=self.upsample)

        def align(rgb: np.ndarray, name: str) -> np.ndarray:
            faces = analyzer.detect(rgb)
            if not faces:
                raise ImageReadError(f"no face found in {name}; set data.fallback_box or remove the photo")
            return align_face(rgb, faces[0].landmarks, size)

        return align


def aligned_crops(images: Sequence[str | os.PathLike | bytes], alignment: Alignment,
                  cache_dir: str | os.PathLike | None = None, *, progress: bool = True) -> np.ndarray:
    """N×S×S×3 uint8 crops of ``images``: file paths, or encoded images (JPEG/PNG bytes, as parquet
    and WebDataset shards hold them). Photos whose bytes are cached under ``alignment`` in
    ``cache_dir`` are not decoded; the others are aligned and added to the cache."""
    size = alignment.size
    crops = np.empty((len(images), size, size, 3), np.uint8)
    store = alignment.cache_file(cache_dir) if cache_dir is not None else None
    new: dict[str, np.ndarray] = {}
    align = None
    with _open_store(store) as (stored, read_crop):
        for index, item in enumerate(tqdm(images, desc=f"aligning faces ({alignment.method})",
                                          disable=not progress, leave=False)):
            if isinstance(item, bytes):
                data, name = item, f"image {index} of the face set"
            else:
                data, name = read_image_bytes(item), str(item)
            key = hashlib.sha256(data).hexdigest()
            if key in new:
                crops[index] = new[key]
            elif key in stored:
                crops[index] = read_crop(key)
            else:
                align = align or alignment.aligner()
                crops[index] = new[key] = align(decode_image(data, name), name)
    if store is not None and new:
        _add_to_store(store, new, alignment)
    return crops


@contextmanager
def _open_store(path: Optional[Path]):
    """(the keys in the cache file, a function reading one crop); the crops stay on disk until read."""
    if path is None or not path.is_file():
        yield set(), None
        return
    with open_safetensors(path, "delete it to align the photos again", framework="numpy") as handle:
        yield set(handle.keys()), handle.get_tensor


def _add_to_store(path: Path, new: dict[str, np.ndarray], alignment: Alignment) -> None:
    """Rewrite the cache file with ``new`` added to what it holds now (another run may have added
    crops since this one opened it)."""
    crops = {key: np.ascontiguousarray(crop) for key, crop in new.items()}
    with _open_store(path) as (stored, read_crop):
        for key in stored - crops.keys():
            crops[key] = read_crop(key)
    save_safetensors_atomic(crops, path, metadata={"alignment": json.dumps(alignment.settings())})
