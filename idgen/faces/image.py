"""Reading any photo a user might hand us into one canonical array: RGB, uint8, upright.

Face detectors and recognisers all want 8-bit RGB. Real photos arrive as greyscale, RGBA,
palette, 16-bit PNG/TIFF, CMYK JPEG, or rotated by an EXIF tag; this module is the single place
that normalises them, and turns unreadable files into an :class:`ImageReadError` naming the file.

Memory is bounded before it is spent: a file's size is checked before it is read
(:data:`MAX_IMAGE_FILE_BYTES`), and the memory its pixels would take from the header alone, before
any pixel is decoded (:data:`MAX_DECODED_BYTES`).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

#: The largest image file idgen reads (256 MiB), checked from its size on disk before it is read.
MAX_IMAGE_FILE_BYTES = 256 * 2**20
#: The most memory one decoded image may take (256 MiB, by :func:`decoded_bytes`: an 8000×8000 photo),
#: checked from the file's header before any pixel is decoded, so a small file that would expand to
#: gigabytes (a decompression bomb, or a 1-pixel-wide strip millions of rows tall) is refused
#: without the memory it asks for.
MAX_DECODED_BYTES = 256 * 2**20


def decoded_bytes(width: int, height: int) -> int:
    """The memory PIL takes for one decoded ``width × height`` RGB copy: 4 bytes a pixel (RGB is held
    as RGBX) and, measured, about 24 bytes of bookkeeping a row, so a 1-pixel-wide strip costs seven
    times what a square photo of as many pixels does."""
    return height * (4 * width + 24)


def _check_size(width: int, height: int, name: str) -> None:
    """Refuse, with an :class:`ImageReadError` naming ``name``, an image over :data:`MAX_DECODED_BYTES`."""
    if decoded_bytes(width, height) > MAX_DECODED_BYTES:
        raise ImageReadError(
            f"{name}: {width}×{height} pixels would take {decoded_bytes(width, height) / 2**20:,.0f} MiB to decode, "
            f"more than idgen decodes ({MAX_DECODED_BYTES / 2**20:,.0f} MiB); downscale it (a face needs far fewer)")


def describe(source) -> str:
    """A short name for an image input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"<PIL image {source.size[0]}x{source.size[1]}>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))}>"
    return repr(source)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel data of any depth to 0..255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        return np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # Integer images: 16-bit PNG/TIFF use the full 0..65535 range.
    top = 65535.0 if array.max(initial=0) > 255 else 255.0
    return np.clip(array.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, compositing transparency on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image)), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Accept H×W, H×W×1, H×W×3 or H×W×4 arrays (RGB order) of any numeric dtype."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageReadError(
            f"expected an H×W, H×W×3 or H×W×4 image array, got shape {array.shape}"
        )
    array = _to_uint8(array)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_image(source: ImageInput) -> np.ndarray:
    """Load a path, PIL image or array as an upright H×W×3 uint8 RGB array.

    EXIF orientation is applied, so faces are found in the image as a person sees it.
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, Image.Image):
        _check_size(*source.size, describe(source))
        return np.asarray(pil_to_rgb(ImageOps.exif_transpose(source)))
    if not isinstance(source, (str, os.PathLike)):
        raise ImageReadError(f"cannot use {type(source).__name__} as an image; pass a path, PIL image or array")
    return _decode(image_file(source), str(source))


def image_file(path: str | os.PathLike) -> Path:
    """``path``, if it is a file idgen reads as an image; otherwise an :class:`ImageReadError` saying
    what it is: missing, a folder, a symbolic-link loop or a broken link, not a regular file, or over
    :data:`MAX_IMAGE_FILE_BYTES` (from its size: nothing is read)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(f"{path}: a symbolic link loop (the link leads back to itself); "
                                 "pass an image file") from None
        if exc.errno == errno.ENOENT and path.is_symlink():
            raise ImageReadError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist; "
                                 "pass an image file") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ImageReadError(f"{path}: no such file; check the path") from None
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(f"{path}: is a folder: pass an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(f"{path}: not a regular file (a device, pipe or socket): pass an image file")
    if info.st_size > MAX_IMAGE_FILE_BYTES:
        raise ImageReadError(f"{path}: {info.st_size / 2**20:,.0f} MiB is more than idgen reads for one image "
                             f"({MAX_IMAGE_FILE_BYTES / 2**20:,.0f} MiB); downscale or re-encode it")
    return path


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file (checked by :func:`image_file`, so at most
    :data:`MAX_IMAGE_FILE_BYTES`), for callers that hash them before decoding them with
    :func:`decode_image`, which checks the header before any pixel is decoded."""
    path = image_file(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ... as read from a file or a dataset shard) as an upright
    H×W×3 uint8 RGB array; ``name`` says where they came from in error messages.

    Images over :data:`MAX_DECODED_BYTES` are refused before decoding; of a multi-frame file (animated
    GIF, multi-page TIFF) the first frame is used. The format comes from the content, not the name.
    """
    return _decode(io.BytesIO(data), name)


def _decode(source, name: str) -> np.ndarray:
    """:func:`decode_image` of a file path (read lazily by PIL) or a ``BytesIO``."""
    with _opened(source, name) as image:
        image.load()   # the first frame of an animated GIF or a multi-page TIFF
        return np.asarray(pil_to_rgb(ImageOps.exif_transpose(image)))


@contextmanager
def _opened(source, name: str):
    """The image in ``source`` (a path or a ``BytesIO``) with only its header read and its size checked
    (:func:`_check_size`); PIL's errors in the block become :class:`ImageReadError` naming ``name``."""
    try:
        with Image.open(source) as image:   # reads the header only
            _check_size(*image.size, name)
            yield image
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not an image file PIL can read; convert it to JPEG or PNG"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: refused as a decompression bomb ({exc}); downscale it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:   # the file system's error, not PIL's
            raise ImageReadError(f"{name}: cannot be read ({exc.strerror}); check its permissions") from None
        raise ImageReadError(
            f"{name}: the image is truncated or corrupt ({exc}); re-export or re-download it"
        ) from None
