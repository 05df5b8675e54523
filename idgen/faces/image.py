"""Reading any photo a user might hand us into one canonical array: RGB, uint8, upright.

Face detectors and recognisers all want 8-bit RGB. Real photos arrive as greyscale, RGBA,
palette, 16-bit PNG/TIFF, CMYK JPEG, or rotated by an EXIF tag; this module is the single place
that normalises them, and turns unreadable files into an :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

#: The most pixels idgen decodes from a file (64 megapixels: an 8000×8000 scan). Read from the file's
#: header before any pixel is decoded, so a small file that would expand to gigabytes (a
#: decompression bomb) is refused without the memory it asks for.
MAX_IMAGE_PIXELS = 64_000_000


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
        return np.asarray(pil_to_rgb(ImageOps.exif_transpose(source)))
    if not isinstance(source, (str, os.PathLike)):
        raise ImageReadError(f"cannot use {type(source).__name__} as an image; pass a path, PIL image or array")
    return decode_image(read_image_bytes(source), str(source))


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, or an :class:`ImageReadError` naming it when there is none."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file; check the path")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc}); check its permissions") from None


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ... as read from a file or a dataset shard) as an upright
    H×W×3 uint8 RGB array; ``name`` says where they came from in error messages.

    Callers that also need the bytes (to hash them, say) read a file once and decode it from here.
    Files over :data:`MAX_IMAGE_PIXELS` are refused before decoding; of a multi-frame file (animated
    GIF, multi-page TIFF) the first frame is used. The format comes from the content, not the name.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:   # reads the header only
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageReadError(
                    f"{name}: {width}×{height} pixels is more than idgen decodes ({MAX_IMAGE_PIXELS:,}); "
                    "downscale it (a face needs far fewer)")
            image.load()   # the first frame of an animated GIF or a multi-page TIFF
            upright = ImageOps.exif_transpose(image)
            return np.asarray(pil_to_rgb(upright))
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not an image file PIL can read; convert it to JPEG or PNG"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: refused as a decompression bomb ({exc}); downscale it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(
            f"{name}: the image is truncated or corrupt ({exc}); re-export or re-download it"
        ) from None
