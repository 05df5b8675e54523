"""Face photos → training examples: analyse once, cache identity vectors, serve seeded batches.

A folder of photos is scanned once per recogniser. Each file is identified by the SHA-256 of its
bytes, so renaming or moving photos keeps their cached vectors and editing a photo invalidates
only that photo. Files that cannot be read or hold no face are skipped and reported, never fatal;
a folder with nothing usable is a :class:`~idgen.errors.ConfigError` before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, IdgenError, NoFaceError
from ..faces import FaceAnalyzer, iter_image_files, load_image
from ..io import save_safetensors_atomic
from .randomness import example_generator


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_path(detector: str, recognizer: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "idgen" / "identities"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{detector}--{recognizer}")[-120:]
    return root / f"{slug}.safetensors"


class IdentityCache:
    """Identity vectors of photos in one safetensors file: tensor name = file hash. Photos that were
    analysed and held no face are remembered too (in the file's metadata), so they are not analysed
    again either."""

    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.vectors: dict[str, torch.Tensor] = {}
        self.no_face: set[str] = set()
        self.dirty = False
        if self.path is not None and self.path.exists():
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                self.vectors = {key: handle.get_tensor(key) for key in handle.keys()}
                self.no_face = set(json.loads((handle.metadata() or {}).get("no_face", "[]")))

    def save(self) -> None:
        if self.dirty and self.path is not None:
            save_safetensors_atomic(self.vectors, self.path, metadata={"no_face": json.dumps(sorted(self.no_face))})
            self.dirty = False


@dataclass
class FaceFolder:
    """The usable photos of a folder with their identity vectors, and what was skipped and why."""

    files: list[str]
    id_embeds: torch.Tensor  # N×D float32, raw recogniser output (normalised where used)
    skipped: dict[str, str] = field(default_factory=dict)
    analysed: int = 0  # photos analysed this time (the rest came from the cache)

    def report(self) -> dict:
        return {"used": len(self.files), "skipped": len(self.skipped), "analysed_now": self.analysed,
                "skipped_files": self.skipped}


def scan_faces(folder: str | os.PathLike, analyzer: FaceAnalyzer, cache: Optional[IdentityCache] = None,
               *, what: str = "data.faces_dir") -> FaceFolder:
    """Identity vectors for every photo in ``folder`` with a face (the largest one per photo)."""
    if folder is None:
        raise ConfigError(f"{what} is not set; point it at a folder of face photos")
    if not Path(folder).is_dir():
        raise ConfigError(f"{what}: {folder} is not a folder")
    cache = cache or IdentityCache()
    files, vectors, skipped, analysed = [], [], {}, 0
    for path in iter_image_files(folder):
        try:
            key = file_hash(path)
        except OSError as exc:
            skipped[path] = f"unreadable: {exc}"
            continue
        if key in cache.no_face:
            skipped[path] = "no face (cached)"
            continue
        if key not in cache.vectors:
            analysed += 1
            try:
                face = analyzer.get_face(path)
            except IdgenError as exc:
                skipped[path] = str(exc)
                if isinstance(exc, NoFaceError):
                    cache.no_face.add(key)
                    cache.dirty = True
                continue
            cache.vectors[key] = torch.from_numpy(np.asarray(face.embedding, dtype=np.float32))
            cache.dirty = True
        files.append(path)
        vectors.append(cache.vectors[key])
    cache.save()
    if not files:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in list(skipped.items())[:3]) or "no image files"
        raise ConfigError(f"{what}: no usable face photo in {folder} ({reasons}); add photos with one visible face")
    return FaceFolder(files, torch.stack(vectors), skipped, analysed)


def load_training_image(path: str, resolution: int) -> torch.Tensor:
    """Photo → ``3×R×R`` float tensor in [-1, 1]: centre square crop, resized (faces in face
    datasets are centred; Arc2Face trains on aligned face crops)."""
    rgb = load_image(path)
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(rgb[top:top + side, left:left + side]).resize((resolution, resolution), Image.BICUBIC)
    return torch.from_numpy(np.asarray(square, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


class FaceDataset(torch.utils.data.Dataset):
    """Items ``{"pixel_values", "id_embeds", "prompt"}``; images are decoded once and kept."""

    def __init__(self, files: list[str], id_embeds: torch.Tensor, resolution: int, prompt: str = ""):
        self.files, self.id_embeds, self.resolution, self.prompt = files, id_embeds, resolution, prompt
        self._images: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        if index not in self._images:
            self._images[index] = load_training_image(self.files[index], self.resolution)
        return {"pixel_values": self._images[index], "id_embeds": self.id_embeds[index], "prompt": self.prompt}


class SeededBatches:
    """Which examples make up micro-batch ``k``, and their random generators: a pure function of
    (seed, k, process).

    The examples are walked epoch by epoch in a permutation seeded by (seed, epoch); micro-batch
    ``k`` of process ``r`` of ``P`` takes the ``batch_size`` consecutive stream positions starting at
    ``(k·P + r)·batch_size``, so the processes share out one stream without overlap, and ``P``
    processes with batch ``b`` see together what one process with batch ``P·b`` sees. Each position
    has its own generator (:func:`.randomness.example_generator`). Nothing depends on how many batches
    were drawn before, so a run resumed at step ``k`` sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, dataset, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_processes, self.process_index = num_processes, process_index
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(len(self.dataset), generator=generator)
        return self._perms[epoch]

    def positions(self, micro_step: int) -> range:
        start = (micro_step * self.num_processes + self.process_index) * self.batch_size
        return range(start, start + self.batch_size)

    def indices(self, micro_step: int) -> list[int]:
        n = len(self.dataset)
        return [int(self._permutation(pos // n)[pos % n]) for pos in self.positions(micro_step)]

    def batch(self, micro_step: int) -> dict:
        indices = self.indices(micro_step)
        items = [self.dataset[i] for i in indices]
        return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
                "id_embeds": torch.stack([it["id_embeds"] for it in items]),
                "prompts": [it["prompt"] for it in items], "indices": indices,
                "generators": [example_generator(self.seed, pos) for pos in self.positions(micro_step)]}
