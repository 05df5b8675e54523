"""insightface's verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), read safely.

A ``.bin`` file is a pickle of ``(bins, issame_list)``: the encoded images (JPEG or PNG bytes, already
aligned to the ArcFace template at 112×112), two per pair, and one boolean per pair (same person or
not). The published files were written by Python 2 (image bytes as ``str``, read as latin-1 text and
turned back into the same bytes); some hold each image as a numpy ``uint8`` array of the encoded
bytes instead.

A pickle can run any code while it loads, so these files are never given to ``pickle.load``:
:class:`BinUnpickler` resolves no global but numpy's array reconstruction (``_reconstruct``,
``ndarray``, ``dtype``, no object arrays) and ``_codecs.encode`` with the latin-1 codec only (how
Python 3's protocol 2 writes bytes). Anything else, an ``os.system`` say, is refused before it is
looked up, with a :class:`~idgen.errors.DataError` naming the file.

The pairs are scored as insightface does: images embedded without detection
(:meth:`~idgen.faces.FaceAnalyzer.embed_aligned`: the template placed on the whole crop), cosine of the embeddings, and 10 folds of
consecutive pairs (for ``lfw.bin``, LFW View 2's ten sets of 600 pairs).
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, ImageReadError
from ..faces.image import decode_image
from ..io import write_bytes_atomic
from ..faces.occlusion import Occlusion
from .verification import VerificationResult, embed_aligned, evaluate_scores


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct   # numpy ≥ 2
    except ImportError:   # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _plain_dtype(*args):
    """``numpy.dtype`` as a pickle calls it, refusing object dtypes (whose elements would be pickles)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"an object array (dtype {dtype}) is not image data")
    return dtype


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol 2 uses it for bytes objects: latin-1 only."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with the {encoding!r} codec is not how bytes are pickled")
    return text.encode("latin-1", errors)


#: Every global a verification set may name, and what it resolves to.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: _plain_dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a verification set does not need."""


class BinUnpickler(pickle.Unpickler):
    """Unpickles lists, tuples, bytes, strings, numbers and booleans, plus numpy arrays of plain dtypes;
    refuses every other global (nothing is imported or called for it)."""

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise RefusedGlobal(f"{module}.{name}")
        return allowed()

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by verification sets")


def _as_bytes(item, path: Path, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):   # a Python 2 str read with encoding="latin1"
        return item.encode("latin-1")
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise DataError(f"{path}: image {index} is a {type(item).__name__}, not encoded image bytes; "
                    "an insightface .bin holds JPEG/PNG bytes, two per pair")


def read_bin_pairs(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """``(encoded images, same)`` of an insightface verification ``.bin``: 2·N JPEG/PNG byte strings
    (pair k is images 2k and 2k + 1) and N booleans, read with :class:`BinUnpickler`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; download insightface's verification sets (lfw.bin, ...) first")
    try:
        with open(path, "rb") as handle:
            data = BinUnpickler(handle, encoding="latin1").load()   # Python 2 str: latin-1, re-encoded below
    except RefusedGlobal as exc:
        raise DataError(f"{path}: refused: the pickle asks for {exc}, which an insightface verification set never "
                        "needs (it holds image bytes and booleans); nothing in it was run. Use a .bin from "
                        "insightface's own datasets, or write one with idgen.eval.write_bin") from None
    except Exception as exc:  # noqa: BLE001 — truncated files, other formats, refused reductions
        raise DataError(f"{path}: not an insightface verification set (a pickle of (images, issame_list)): "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{path}: expected a pickled pair (images, issame_list), found a {type(data).__name__}")
    bins, issame = data
    if not isinstance(bins, (list, tuple, np.ndarray)) or not isinstance(issame, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: expected lists of images and of booleans, found {type(bins).__name__} and "
                        f"{type(issame).__name__}")
    if len(bins) != 2 * len(issame) or not len(issame):
        raise DataError(f"{path}: {len(bins)} images for {len(issame)} pairs; a verification set has two per pair")
    if not all(isinstance(s, (bool, np.bool_)) or (isinstance(s, (int, np.integer)) and s in (0, 1)) for s in issame):
        raise DataError(f"{path}: issame_list must hold booleans")
    return [_as_bytes(item, path, k) for k, item in enumerate(bins)], np.asarray(issame, dtype=bool)


@dataclass
class VerificationSet:
    """The pairs of a ``.bin``: ``images[2k]`` and ``images[2k + 1]`` (H×W×3 uint8 RGB) are pair k,
    ``same[k]`` says whether they show one person."""

    images: list[np.ndarray]
    same: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.same)

    def folds(self, k: int = 10) -> np.ndarray:
        """The fold of each pair: ``k`` blocks of consecutive pairs, as insightface's evaluation
        (``KFold(k, shuffle=False)``: the first ``N mod k`` folds one pair longer)."""
        folds = np.empty(len(self), dtype=int)
        for fold, index in enumerate(np.array_split(np.arange(len(self)), k)):
            folds[index] = fold
        return folds


def read_bin(path: str | os.PathLike) -> VerificationSet:
    """An insightface verification ``.bin`` as decoded images and labels (see :func:`read_bin_pairs`)."""
    encoded, same = read_bin_pairs(path)
    try:
        images = [decode_image(data, f"{path}: image {k}") for k, data in enumerate(encoded)]
    except ImageReadError as exc:
        raise DataError(str(exc)) from None
    return VerificationSet(images, same, str(path))


def write_bin(path: str | os.PathLike, images: list[bytes], same: list[bool]) -> None:
    """Write ``(images, same)`` as insightface's ``.bin`` format (images: encoded JPEG/PNG bytes, two per
    pair), atomically; insightface's and idgen's readers both read it."""
    images, same = [bytes(i) for i in images], [bool(s) for s in same]
    if len(images) != 2 * len(same):
        raise ValueError(f"{len(images)} images for {len(same)} pairs; give two per pair")
    buffer = io.BytesIO()
    pickle.dump((images, same), buffer, protocol=4)
    write_bytes_atomic(path, buffer.getvalue())


def verify_bin(analyzer, source: str | os.PathLike | VerificationSet, batch_size: int = 64, folds: int = 10,
               progress: bool = True, occlusion: Occlusion | None = None) -> VerificationResult:
    """Verification accuracy (``folds``-fold, threshold from the other folds), AUC and TAR@FAR=1e-3 of a
    :class:`~idgen.faces.FaceAnalyzer`'s recogniser (with its ``flip``) on a ``.bin``, as
    :func:`~idgen.eval.verify_pairs` scores a pairs file; with ``occlusion``, the second crop of pair k is
    occluded with the generator seeded by k."""
    pairs = source if isinstance(source, VerificationSet) else read_bin(source)
    images = pairs.images if occlusion is None else [
        image if k % 2 == 0 else occlusion(image, k // 2) for k, image in enumerate(pairs.images)]
    embeddings = embed_aligned(analyzer, images, batch_size, progress)
    scores = (embeddings[0::2] * embeddings[1::2]).sum(1)
    metrics = evaluate_scores(scores, pairs.same, pairs.folds(folds))
    return VerificationResult(pairs=len(pairs), images=len(pairs.images), missing_faces=0,
                              occlusion=None if occlusion is None else asdict(occlusion), **metrics)
