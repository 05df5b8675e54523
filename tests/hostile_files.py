"""Files that attack or break idgen's readers (image decoders, weights loaders), for the tests that
check each is refused with a message naming it."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
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


def png_strip(path: Path, height: int) -> Path:
    """A real, complete 1-pixel-wide black greyscale PNG ``height`` pixels tall: ~2 KB a million rows
    on disk, and each row costs PIL far more memory than its one pixel."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, parts = zlib.compressobj(9), []
    for start in range(0, height, 1_000_000):
        parts.append(compressor.compress(b"\0\0" * min(1_000_000, height - start)))   # filter byte + pixel
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", 1, height, 8, 0, 0, 0, 0)   # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space and no time to make (a hole: reading it
    gives zeros), e.g. a 3 GB ``.jpg``."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def cut_short(path: Path, keep: float = 0.5) -> Path:
    """``path`` truncated in place to ``keep`` of its bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


class RunsCode:
    """Unpickling this runs ``touch marker``: what a hostile pickle (``.bin``, ``.pth``) holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_running_code(path: Path, marker: Path) -> Path:
    """A ``torch.save`` file (a zip holding a pickle) of a state dict whose tensor would, unpickled,
    run ``touch marker``."""
    import torch

    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
    return path


def object_array_npy(path: Path) -> Path:
    """An ``.npy`` of dtype object: loading it means unpickling (``allow_pickle=True``)."""
    np.save(path, np.array([{"not": "numbers"}, None], dtype=object), allow_pickle=True)
    return path


def safetensors_with_nan(path: Path) -> Path:
    """``path`` (a safetensors file) rewritten with one value of its first float tensor set to NaN."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def pickled_instead(path: Path) -> Path:
    """``path`` (a safetensors file) replaced by the same tensors saved with ``torch.save``: a pickle
    under a safetensors name."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path))
    path.unlink()
    torch.save(state, path)
    return path

