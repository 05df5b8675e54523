"""Distilling a real face recogniser into a Face Transformer while it trains.

A Face Transformer trained from scratch on a small labelled folder (LFW-62: ~1,400 faces) learns a
weak embedding: 62 class labels carry little information per image. A pretrained recogniser (the
*teacher*, e.g. MobileFaceNet, trained on millions of faces) gives every image a 128-d identity
embedding, which is a much richer target. :func:`prepare_distillation` computes the teacher's
embeddings of the training images and of optional extra, unlabelled face photos (people who are not
classes of the recogniser, so nothing about the test images leaks in); the trainer
(:mod:`idgen.recognition.trainer`) then adds
``distill_weight · (1 − cos(student, teacher))`` to the margin loss.

The teacher sees the 112×112 aligned crop (plus its mirror image, summed), the student the same crop
at its own size. Teacher embeddings are cached next to the aligned crops, keyed by the crops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io import read_safetensors, save_safetensors_atomic
from .data import FaceDataConfig, FaceSet, list_identities, load_aligned

TEACHER_SIZE = 112


def load_teacher(spec: str):
    """``"mobilefacenet:PATH"`` or the path of an ArcFace-style ONNX recogniser."""
    from ..faces import FaceAnalyzer

    return FaceAnalyzer.from_backend("dlib", spec).recognizer


def teacher_embeddings(files: list[Path], data: FaceDataConfig, spec: str, batch_size: int = 64) -> torch.Tensor:
    """N×D L2-normalised teacher embeddings (crop + mirrored crop) of ``files``, cached."""
    crops = load_aligned(files, dataclasses.replace(data, resolution=TEACHER_SIZE))
    cache = None
    if data.cache_dir:  # keyed by what the teacher sees: its spec and the crops
        digest = hashlib.sha256(spec.encode())
        digest.update(crops)
        cache = Path(data.cache_dir) / f"teacher-{digest.hexdigest()[:16]}.safetensors"
        if cache.is_file():
            return read_safetensors(cache, "delete it to compute the teacher embeddings again")["embeddings"]
    teacher = load_teacher(spec)
    out = []
    for start in tqdm(range(0, len(crops), batch_size), desc="teacher embeddings", leave=False):
        batch = crops[start: start + batch_size]
        out.append(teacher.embed(batch) + teacher.embed(np.ascontiguousarray(batch[:, :, ::-1])))
    embeddings = torch.nn.functional.normalize(torch.from_numpy(np.concatenate(out)), dim=-1)
    if cache is not None:
        save_safetensors_atomic({"embeddings": embeddings.contiguous()}, cache)
    return embeddings


def extra_face_files(folder: str, exclude: set[str], max_images: int, seed: int = 0) -> list[Path]:
    """Up to ``max_images`` photos (a seeded draw) from ``<identity>/<image>`` folders whose identity
    is not in ``exclude`` (the recogniser's own classes: their test images must stay unseen)."""
    people = list_identities(Path(os.path.expanduser(folder)), 1)
    files = [f for name, person_files in people.items() if name not in exclude for f in person_files]
    if not files:
        raise ConfigError(f"{folder}: no photos of identities outside the recogniser's classes to distil on")
    return sorted(random.Random(seed).sample(files, min(max_images, len(files))))


def prepare_distillation(train: FaceSet, data: FaceDataConfig, spec: str, extra_folder: str | None = None,
                         max_extra: int = 0, seed: int = 0) -> tuple[FaceSet, FaceSet | None]:
    """``train`` with teacher embeddings attached, and the extra unlabelled set (labels −1) or None."""
    root = Path(os.path.expanduser(data.root))
    train = dataclasses.replace(train, teacher=teacher_embeddings([root / f for f in train.files], data, spec))
    if not extra_folder or max_extra <= 0:
        return train, None
    files = extra_face_files(extra_folder, set(train.class_names), max_extra, seed)
    images = torch.from_numpy(load_aligned(files, data)).permute(0, 3, 1, 2).contiguous()
    extra = FaceSet(images, torch.full((len(files),), -1), train.class_names, [str(f) for f in files],
                    teacher=teacher_embeddings(files, data, spec))
    return train, extra
