"""Embeddings of many images on disk: a safetensors file plus a JSON index of what is in it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import NoFaceError
from ..io import save_safetensors_atomic, write_json_atomic
from .types import Face


def embed_folder(analyzer, files: list[str], out: str | os.PathLike, root=None, batch_size: int = 64) -> dict:
    """Embed ``files`` (largest face each) and write ``out`` (.safetensors) and ``out`` .json.

    The safetensors file holds ``embeddings`` (raw, N×D) and ``normed`` (unit length); row ``i``
    belongs to ``index['files'][i]``. Files without a usable face are listed under ``skipped``
    with the reason.
    """
    out = Path(out)
    results = analyzer.analyze_many(files, batch_size=batch_size, on_missing="report")
    kept, skipped, rows = [], [], []
    for path, result in zip(files, results):
        name = os.path.relpath(path, root) if root else str(path)
        if isinstance(result, Face):
            kept.append(name)
            rows.append(result.embedding)
        else:  # the file was read but holds no face, or could not be read: the error says which
            skipped.append({"file": name, "reason": "no face found" if isinstance(result, NoFaceError) else str(result)})
    index = {"files": kept, "skipped": skipped}
    if rows:
        embeddings = np.stack(rows).astype(np.float32)
        normed = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        save_safetensors_atomic({"embeddings": embeddings, "normed": normed.astype(np.float32)}, out)
    write_json_atomic(out.with_suffix(".json"), index)
    return index
