"""A fake Hugging Face hub cache laid out as huggingface_hub writes it, for tests of what is on the
machine: ``<cache>/models--owner--name/refs/main`` holds the commit, ``snapshots/<commit>/<file>`` is
a symlink to ``blobs/<hash>`` (what ``try_to_load_from_cache`` resolves)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_file(cache: Path, repo: str, name: str, size: int = 2) -> Path:
    """Put ``name`` of the hub repo ``repo`` into ``cache``: a sparse blob of ``size`` bytes (no disk
    is spent on the big ones) linked from the ``main`` snapshot."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    blob = root / "blobs" / hashlib.sha256(name.encode()).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    with open(blob, "wb") as handle:
        handle.truncate(size)
    link = root / "snapshots" / COMMIT / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link
