"""Files that attack an image decoder, for the upload tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1×1 PNG whose header is rewritten to claim ``width × height`` pixels (a decompression
    bomb's shape: a few bytes on disk that would decode to gigabytes)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path
