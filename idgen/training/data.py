"""Face photos → training examples: analyse once, cache identity vectors, serve seeded batches.

A folder of photos is scanned once per recogniser. Each file is identified by the SHA-256 of its
bytes, so renaming or moving photos keeps their cached vectors and editing a photo invalidates
only that photo. The five landmarks of the face are cached too: training crops are aligned on them,
as Arc2Face's training faces were. Files that cannot be read or hold no face are skipped and reported, never fatal;
a folder with nothing usable is a :class:`~idgen.errors.DataError` before any model is loaded.
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
from tqdm import tqdm

from ..errors import ConfigError, DataError, IdgenError, ImageReadError, NoFaceError
from ..faces import FaceAnalyzer, align_face, iter_image_files, load_image
from ..faces.image import decode_image, read_image_bytes
from ..io import open_safetensors, save_safetensors_atomic
from .randomness import example_generator


def default_cache_path(detector: str, recognizer: str, flip: bool = False) -> Path:
    """One cache file per analyser: detector, recogniser and flip test-time augmentation (which
    changes every vector) each name a different file."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "idgen" / "identities"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{detector}--{recognizer}" + ("--flip" if flip else ""))[-120:]
    return root / f"{slug}.safetensors"


class IdentityCache:
    """Identity vectors and 5×2 landmarks of photos in one safetensors file: tensors ``<file hash>``
    and ``<file hash>.landmarks``. Photos that were analysed and held no face are remembered too (in
    the file's metadata), so they are not analysed again either."""

    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.vectors: dict[str, torch.Tensor] = {}
        self.landmarks: dict[str, torch.Tensor] = {}
        self.no_face: set[str] = set()
        self.dirty = False
        if self.path is not None and self.path.exists():
            with open_safetensors(self.path, "delete it (data.identity_cache) to analyse the photos again") as handle:
                for key in handle.keys():
                    table = self.landmarks if key.endswith(".landmarks") else self.vectors
                    table[key.removesuffix(".landmarks")] = handle.get_tensor(key)
                self.no_face = set(json.loads((handle.metadata() or {}).get("no_face", "[]")))

    def __contains__(self, key: str) -> bool:
        return key in self.vectors and key in self.landmarks

    def save(self) -> None:
        if self.dirty and self.path is not None:
            tensors = {**self.vectors, **{f"{k}.landmarks": v for k, v in self.landmarks.items()}}
            save_safetensors_atomic(tensors, self.path, metadata={"no_face": json.dumps(sorted(self.no_face))})
            self.dirty = False


@dataclass
class FaceFolder:
    """The usable photos of a folder with their identity vectors, and what was skipped and why."""

    files: list[str]
    id_embeds: torch.Tensor  # N×D float32, raw recogniser output (normalised where used)
    landmarks: torch.Tensor  # N×5×2 float32, pixel coordinates of the face in the upright photo
    skipped: dict[str, str] = field(default_factory=dict)
    analysed: int = 0  # photos analysed this time (the rest came from the cache)

    def report(self) -> dict:
        return {"used": len(self.files), "skipped": len(self.skipped), "analysed_now": self.analysed,
                "skipped_files": self.skipped}


def read_people(paths: list) -> set[str]:
    """The names in people lists such as LFW's ``peopleDevTest.txt`` (``name count``) and
    ``pairsDevTest.txt`` (``name i j`` / ``name1 i name2 j``): every field that is not a number."""
    names = set()
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise DataError(f"people list {path}: {exc.strerror}; give a readable text file of names") from exc
        names.update(field for field in text.split() if not field.lstrip("-").isdigit())
    return names


def scan_faces(folder: str | os.PathLike, analyzer: FaceAnalyzer, cache: Optional[IdentityCache] = None,
               *, what: str = "data.faces_dir", exclude: set[str] = frozenset(),
               only: Optional[set[str]] = None, save_every: int = 500) -> FaceFolder:
    """Identity vectors for every photo in ``folder`` with a face (the largest one per photo).

    Photos whose parent folder is named in ``exclude``, or (with ``only``) not named in ``only``,
    are left out before they are read: held-out people never reach training. The cache is saved
    every ``save_every`` newly analysed photos, so an interrupted scan resumes where it stopped.
    """
    if folder is None:
        raise ConfigError(f"{what} is not set; point it at a folder of face photos")
    if not Path(folder).is_dir():
        raise DataError(f"{what}: {folder} is not a folder")
    cache = cache or IdentityCache()
    files, vectors, landmarks, skipped, analysed = [], [], [], {}, 0
    wanted = [path for path in iter_image_files(folder)
              if Path(path).parent.name not in exclude and (only is None or Path(path).parent.name in only)]
    for path in tqdm(wanted, desc=f"analysing {what}", unit="photo", disable=len(wanted) < 200):
        try:
            data = read_image_bytes(path)   # read once: hashed here, decoded below on a cache miss
        except ImageReadError as exc:
            skipped[path] = str(exc)
            continue
        key = hashlib.sha256(data).hexdigest()
        if key in cache.no_face:
            skipped[path] = "no face (cached)"
            continue
        if key not in cache:
            analysed += 1
            try:
                face = analyzer.get_face(decode_image(data, str(path)), name=str(path))
            except IdgenError as exc:
                skipped[path] = str(exc)
                if isinstance(exc, NoFaceError):
                    cache.no_face.add(key)
                    cache.dirty = True
                continue
            cache.vectors[key] = torch.from_numpy(np.asarray(face.embedding, dtype=np.float32))
            cache.landmarks[key] = torch.from_numpy(np.asarray(face.landmarks, dtype=np.float32))
            cache.dirty = True
            if analysed % save_every == 0:  # an interrupted scan keeps what it analysed
                cache.save()
        files.append(path)
        vectors.append(cache.vectors[key])
        landmarks.append(cache.landmarks[key])
    cache.save()
    if not files:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in list(skipped.items())[:3]) or "no image files"
        raise DataError(f"{what}: no usable face photo in {folder} ({reasons}); add photos with one visible face")
    return FaceFolder(files, torch.stack(vectors), torch.stack(landmarks), skipped, analysed)


def load_training_image(path: str, resolution: int, landmarks: Optional[np.ndarray] = None,
                        face_scale: float = 0.8) -> torch.Tensor:
    """Photo → ``3×R×R`` float tensor in [-1, 1].

    With ``landmarks`` the crop is aligned on the face: a similarity transform puts the five points
    on the ArcFace template shrunk by ``face_scale`` (:func:`idgen.faces.face_template`; Arc2Face
    learnt from faces aligned this way). Without (generated prior images), a centre square crop.
    """
    rgb = load_image(path)
    if landmarks is not None:
        square = Image.fromarray(align_face(rgb, np.asarray(landmarks), resolution, face_scale))
    else:
        height, width = rgb.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = Image.fromarray(rgb[top:top + side, left:left + side]).resize((resolution, resolution), Image.BICUBIC)
    return torch.from_numpy(np.asarray(square, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


class FaceDataset(torch.utils.data.Dataset):
    """Items ``{"pixel_values", "id_embeds", "prompt"}``; images are decoded once and kept. Photos
    with ``landmarks`` are face-aligned crops (see :func:`load_training_image`)."""

    def __init__(self, files: list[str], id_embeds: torch.Tensor, resolution: int, prompt: str = "",
                 landmarks: Optional[torch.Tensor] = None, face_scale: float = 0.8):
        self.files, self.id_embeds, self.resolution, self.prompt = files, id_embeds, resolution, prompt
        self.landmarks, self.face_scale = landmarks, face_scale
        self._images: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        if index not in self._images:
            landmarks = self.landmarks[index].numpy() if self.landmarks is not None else None
            self._images[index] = load_training_image(self.files[index], self.resolution, landmarks, self.face_scale)
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
