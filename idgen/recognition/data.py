"""Identity-labelled face folders as in-memory tensors, aligned once and cached.

A face folder has the ImageFolder layout ``<identity>/<image>``. Photos are aligned with
:mod:`idgen.faces` (dlib detector, 5-point similarity transform to the ArcFace template) or, for
pre-cropped sets such as ORL, simply resized. The aligned uint8 crops are cached by
:mod:`idgen.faces.cache`, keyed by each photo's bytes and the alignment settings, so a second run
starts in seconds.

The train/test split is fixed and per identity: each identity's files are sorted by name, the last
``test_fraction`` of them (at least ``min_test``, at most ``max_test``) are the test images and up
to ``max_train`` of the rest are the training images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..faces.cache import Alignment, aligned_crops


@dataclass
class FaceSet:
    """Images (N×C×S×S uint8) with integer labels indexing ``class_names`` (−1: unlabelled), and
    optionally a teacher recogniser's embedding of each image (for distillation)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    files: list[str] = field(default_factory=list)
    teacher: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: torch.Tensor) -> "FaceSet":
        index = mask.nonzero().flatten()
        return FaceSet(self.images[index], self.labels[index], self.class_names,
                       [self.files[i] for i in index.tolist()] if self.files else [],
                       None if self.teacher is None else self.teacher[index])

    def of_classes(self, classes) -> "FaceSet":
        return self.subset(torch.isin(self.labels, torch.as_tensor(list(classes), dtype=torch.long)))

    def hold_out(self, k: int) -> tuple["FaceSet", "FaceSet"]:
        """(the rest, the last ``k`` images of every class): a validation split carved from training images."""
        held = torch.zeros(len(self), dtype=torch.bool)
        for c in self.labels.unique():
            held[(self.labels == c).nonzero().flatten()[-k:] if k else []] = True
        return self.subset(~held), self.subset(held)

    def few_shot(self, k: int) -> "FaceSet":
        """The first ``k`` images of every class (deterministic)."""
        keep = torch.zeros(len(self), dtype=torch.bool)
        for c in self.labels.unique():
            keep[(self.labels == c).nonzero().flatten()[:k]] = True
        return self.subset(keep)


@dataclass
class FaceDataConfig:
    root: str
    align: str = "dlib"          # "dlib" (detect + align) or "resize" (pre-cropped faces)
    image_size: int = 112
    min_images_per_class: int = 1
    test_fraction: float = 0.25
    min_test: int = 1
    max_test: int = 10
    max_train: int | None = None
    fallback_box: float | None = 0.42  # dlib: centred box used when no face is detected (LFW is pre-centred)
    cache_dir: str | None = None

    def __post_init__(self):
        if self.align not in ("dlib", "resize"):
            raise ConfigError(f"data.align must be 'dlib' or 'resize', not {self.align!r}")


def list_identities(root: Path, min_images: int) -> dict[str, list[Path]]:
    from ..faces import iter_image_files

    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected <identity>/<image> sub-folders")
    people = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(Path(f) for f in iter_image_files(person))
        if len(files) >= min_images:
            people[person.name] = files
    if len(people) < 2:
        raise DataError(f"{root}: found {len(people)} identity folder(s) with ≥ {min_images} images; need at least 2")
    return people


def load_aligned(files: list[Path], config: FaceDataConfig) -> np.ndarray:
    """N×S×S×3 uint8 crops at ``config.image_size`` (S): resized photos, or 112×112 dlib-aligned
    faces resized to S; the crops are cached in ``config.cache_dir`` by :mod:`idgen.faces.cache`."""
    if config.align == "resize":
        alignment = Alignment("resize", config.image_size)
    else:
        alignment = Alignment("dlib", 112, config.fallback_box)
    crops = aligned_crops(files, alignment, config.cache_dir or None)
    if crops.shape[1] != config.image_size:
        from PIL import Image

        crops = np.stack([np.asarray(Image.fromarray(c).resize((config.image_size,) * 2, Image.BILINEAR))
                          for c in crops])
    return crops


def load_face_folder(config: FaceDataConfig) -> tuple[FaceSet, FaceSet]:
    """The (train, test) split of an identity-labelled folder, as aligned uint8 tensors."""
    people = list_identities(Path(os.path.expanduser(config.root)), config.min_images_per_class)
    train_files, test_files, train_labels, test_labels = [], [], [], []
    for label, files in enumerate(people.values()):
        n_test = int(min(config.max_test, max(config.min_test, round(config.test_fraction * len(files)))))
        if n_test >= len(files):
            raise DataError(f"identity {list(people)[label]!r} has {len(files)} images: too few for a test split")
        train = files[: len(files) - n_test][: config.max_train]
        test_files += files[len(files) - n_test:]
        train_files += train
        train_labels += [label] * len(train)
        test_labels += [label] * n_test
    crops = load_aligned(train_files + test_files, config)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    names = list(people)
    n = len(train_files)
    root = Path(os.path.expanduser(config.root))
    rel = [str(f.relative_to(root)) for f in train_files + test_files]
    return (FaceSet(images[:n], torch.tensor(train_labels), names, rel[:n]),
            FaceSet(images[n:], torch.tensor(test_labels), names, rel[n:]))


def to_model_input(images: torch.Tensor, augment: bool = False) -> torch.Tensor:
    """uint8 N×C×S×S → float in [-1, 1]; ``augment`` adds random flips and ±S/16 pixel shifts."""
    x = images.float().div(127.5).sub(1.0)
    if augment:
        flip = torch.rand(len(x)) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        pad = max(1, x.shape[-1] // 16)
        padded = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
        dx, dy = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = padded[..., dy: dy + x.shape[-2], dx: dx + x.shape[-1]]
    return x
