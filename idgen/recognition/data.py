"""The data layer of every recogniser trainer: labelled face photos, aligned once and cached.

Photos are aligned with :mod:`idgen.faces` and the uint8 crops cached by :mod:`idgen.faces.cache`,
keyed by each photo's bytes and the alignment settings, so a second run starts in seconds.

**Face sets** (MobileFaceNet and IResNet, :mod:`idgen.recognition.trainer`), read from any format
``idgen dataset generate`` writes:

- ImageFolder: ``<root>/<identity>/<image>`` (the synth output's ``images/``), listed by
  :func:`list_identities`, the one reader of identity folders;
- Hugging Face parquet: ``.parquet`` files with an ``image`` column (JPEG/PNG bytes) and ``label``
  (the synth output's ``data/``);
- WebDataset: ``.tar`` shards of ``<key>.jpg`` + ``<key>.cls`` (the synth output's ``webdataset/``).

Parquet shards are read by ``datasets.load_dataset`` (:func:`read_parquet`), so idgen reads what a
user of ``datasets`` gets; folders are listed by :func:`list_identities` (``datasets``'
``imagefolder`` builder lists a folder of many photos far more slowly) and WebDataset shards by
:func:`read_webdataset`.

Every image is aligned to the ArcFace template by detected landmarks (``align="dlib"``) or, for sets
that are already aligned (LFW deep-funneled, generator outputs), by placing the template in a
centred box (``align="box"``): :func:`read_face_set`, then :func:`align_images`.

**Identity folders with a fixed split** (Face Transformer, :mod:`idgen.recognition.trainer`): an
ImageFolder ``<identity>/<image>`` aligned with dlib (5-point similarity transform to the ArcFace
template) or, for pre-cropped sets such as ORL, simply resized, held as in-memory tensors
(:class:`FaceSet`). The train/test split is fixed and per identity: each identity's files are sorted
by name, the last ``test_fraction`` of them (at least ``min_test``, at most ``max_test``) are the
test images and up to ``max_train`` of the rest are the training images (:func:`load_face_folder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import BOX, CROP_SIDE, Range, check_ranges, ranged
from ..errors import ConfigError, DataError, IdgenError
from ..faces import iter_image_files
from ..faces.cache import Alignment, aligned_crops
from ..faces.image import MAX_IMAGE_FILE_BYTES
from ..models import to_tensor


# --- face sets in any format idgen.synth writes ---------------------------------------------------

FORMATS = ("auto", "imagefolder", "parquet", "webdataset")
ALIGNMENTS = ("dlib", "box")


@dataclass
class LabelledImages:
    """Encoded images (file paths or bytes) with labels 0..C-1 indexing ``names``."""

    images: list
    labels: np.ndarray
    names: list[str]


def _labelled(images: list, labels: list, names: dict, source: Path) -> LabelledImages:
    if not images:
        raise DataError(f"{source}: no labelled images found")
    used, index = np.unique(np.asarray(labels), return_inverse=True)  # labels 0..C-1 even if some are unused
    return LabelledImages(images, index.astype(np.int64), [names.get(int(u), str(u)) for u in used])


@contextmanager
def _unreadable_shards(where: Path, format: str):
    """Turn what a shard reader raises for a shard it cannot parse (a truncated parquet, a tar that is
    not one, an unreadable ``.cls``) into a :class:`DataError` naming ``where``."""
    import pyarrow

    try:
        yield
    except IdgenError:
        raise
    except (OSError, ValueError, tarfile.TarError, pyarrow.ArrowException) as error:
        raise DataError(f"{where}: not readable as {format} shards ({error}); write them again") from None


def read_parquet(files: list[Path]) -> LabelledImages:
    """The face set in parquet shards, read by ``datasets.load_dataset`` (streamed: nothing is copied
    into its cache), the images kept encoded: the ``image`` column (embedded bytes), ``label``, and
    identity names from an ``identity`` column, else the label's ``ClassLabel`` names."""
    import datasets

    where = files[0] if len(files) == 1 else files[0].parent
    with _unreadable_shards(where, "parquet"):
        stream = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=True)
    if not isinstance(stream.features.get("image"), datasets.Image) or "label" not in stream.features:
        raise DataError(f"{where}: a face set needs an 'image' column of images and 'label', "
                        f"found {list(stream.features)}")
    classes = stream.features["label"]
    names = dict(enumerate(classes.names)) if isinstance(classes, datasets.ClassLabel) else {}
    images, labels = [], []
    with _unreadable_shards(where, "parquet"):
        for batch in stream.cast_column("image", datasets.Image(decode=False)).iter(batch_size=1000):
            if any(not cell or not cell["bytes"] for cell in batch["image"]) or None in batch["label"]:
                raise DataError(f"{where}: a row holds no image bytes (a path is never followed) or no label; write "
                                "the shards with the images' bytes in them (as `idgen dataset generate` does)")
            images += [cell["bytes"] for cell in batch["image"]]
            labels += batch["label"]
            names.update(zip(batch["label"], batch.get("identity") or ()))
    return _labelled(images, labels, names, where)


def read_webdataset(files: list[Path]) -> LabelledImages:
    """The face set in WebDataset shards: ``<key>.jpg`` (or ``.jpeg``, ``.png``, ``.webp``) with
    ``<key>.cls``, and the identity name from ``<key>.json``; samples without both are skipped, a
    member over :data:`~idgen.faces.image.MAX_IMAGE_FILE_BYTES` is refused before it is read.

    Read here rather than by ``datasets``' ``webdataset`` builder, which is slower and decompresses
    ``.gz`` / ``.bz2`` / ``.xz`` members as it reads them, with no bound on what they unpack to."""
    images, labels, names = [], [], {}
    for path in files:
        samples: dict[str, dict[str, bytes]] = {}
        with _unreadable_shards(path, "webdataset"), tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.size > MAX_IMAGE_FILE_BYTES:
                    raise DataError(f"{path}: the member {member.name!r} is {member.size:,} bytes, more than "
                                    f"the {MAX_IMAGE_FILE_BYTES:,} idgen reads for one image")
                if member.isfile():
                    key, _, ext = member.name.rpartition(".")
                    samples.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
            for key, sample in samples.items():
                image = next((sample[e] for e in ("jpg", "jpeg", "png", "webp") if e in sample), None)
                if image is None or "cls" not in sample:
                    continue
                label = int(sample["cls"])
                images.append(image)
                labels.append(label)
                if "json" in sample:
                    names[label] = json.loads(sample["json"]).get("identity", str(label))
    return _labelled(images, labels, names, files[0].parent)


def list_identities(root: Path, min_images: int, label: str | None = None) -> dict[str, list[Path]]:
    """Each identity folder of ``root`` (sorted by name) with its photos, when it has at least
    ``min_images``; a DataError, naming the folder as ``label`` (default: its path), when it is not a
    folder or fewer than two identities are left."""
    label = label or str(root)
    if not root.is_dir():
        raise DataError(f"{label}: not a folder; expected <identity>/<image> sub-folders")
    people = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(Path(f) for f in iter_image_files(person))
        if len(files) >= min_images:
            people[person.name] = files
    if len(people) < 2:
        raise DataError(f"{label}: found {len(people)} identity folder(s) with ≥ {min_images} images; need at least 2")
    return people


def read_face_set(source: str | Path, format: str = "auto") -> LabelledImages:
    """Read a face set; ``format="auto"`` decides by the files (a synth output folder -> its ``images/``)."""
    path = Path(source)
    if format not in FORMATS:
        raise ConfigError(f"unknown face-set format {format!r}; use one of {FORMATS}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")

    def shards(pattern: str, subfolder: str) -> list[Path]:
        if path.is_file():
            return [path] if path.match(pattern) else []
        return sorted(path.glob(pattern)) or sorted((path / subfolder).glob(pattern))

    if format == "auto":
        if (path / "manifest.jsonl").is_file() and (path / "images").is_dir():
            path, format = path / "images", "imagefolder"
        elif shards("*.parquet", "data"):
            format = "parquet"
        elif shards("*.tar", "webdataset"):
            format = "webdataset"
        else:
            format = "imagefolder"
    if format == "imagefolder":
        people = list_identities(path, 1)
        return LabelledImages([f for files in people.values() for f in files],
                              np.repeat(np.arange(len(people)), [len(f) for f in people.values()]), list(people))
    files = shards("*.parquet", "data") if format == "parquet" else shards("*.tar", "webdataset")
    if not files:
        raise DataError(f"{path}: no {format} shards found")
    return read_parquet(files) if format == "parquet" else read_webdataset(files)


def align_images(images: list, resolution: int, align: str = "dlib", fallback_box: float = 0.42, upsample: int = 0,
                 cache_dir: str | Path | None = None, progress: bool = True) -> np.ndarray:
    """N×resolution×resolution×3 uint8 crops aligned to the ArcFace template (scaled to ``resolution``).

    ``align="dlib"``: dlib landmarks, and where dlib finds no face its landmarks inside the
    centred ``fallback_box`` (see ``FaceAnalyzer(fallback_box=...)``), detected after ``upsample`` doublings
    (0, the idgen default, is enough for faces over ~80 px); ``align="box"``: the template in that box.
    The crops are cached in ``cache_dir`` by :mod:`idgen.faces.cache`.
    """
    if align not in ALIGNMENTS:
        raise ConfigError(f"unknown alignment {align!r}; use one of {ALIGNMENTS}")
    return aligned_crops(images, Alignment(align, resolution, fallback_box, upsample), cache_dir, progress=progress)


# --- identity folders with a fixed train/test split -------------------------------------------------

def hash_tensor(digest, tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s dtype, shape and bytes to the ``hashlib`` object ``digest``."""
    tensor = tensor.detach().contiguous().cpu()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


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

    def digest(self) -> str:
        """SHA-256 of the photos (the pixels), their labels and the class names: what a recogniser
        trained on this set learnt from."""
        digest = hashlib.sha256(json.dumps(self.class_names).encode())
        for tensor in (self.images, self.labels):
            hash_tensor(digest, tensor)
        return digest.hexdigest()

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
    resolution: int = ranged(112, CROP_SIDE)   # crop side in pixels; every crop is held in memory
    min_images_per_class: int = ranged(1, Range(1))
    test_fraction: float = ranged(0.25, Range(above=0, below=1))   # share of each identity's images held out for testing
    min_test: int = ranged(1, Range(1))
    max_test: int = ranged(10, Range(1))
    max_train: int | None = ranged(None, Range(1))
    fallback_box: float | None = ranged(0.42, BOX)  # dlib: centred box used when no face is detected (LFW is pre-centred)
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self)
        if self.align not in ("dlib", "resize"):
            raise ConfigError(f"data.align must be 'dlib' or 'resize', not {self.align!r}")


def load_aligned(files: list[Path], config: FaceDataConfig) -> np.ndarray:
    """N×S×S×3 uint8 crops at ``config.resolution`` (S): resized photos, or 112×112 dlib-aligned
    faces resized to S; the crops are cached in ``config.cache_dir`` by :mod:`idgen.faces.cache`."""
    if config.align == "resize":
        alignment = Alignment("resize", config.resolution)
    else:
        alignment = Alignment("dlib", 112, config.fallback_box)
    crops = aligned_crops(files, alignment, config.cache_dir or None)
    if crops.shape[1] != config.resolution:
        from PIL import Image

        crops = np.stack([np.asarray(Image.fromarray(c).resize((config.resolution,) * 2, Image.BILINEAR))
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


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of N×C×H×W images (the augmentation of every recogniser trainer)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None].to(images.device), images.flip(-1), images)


def to_model_input(images: torch.Tensor, augment: bool = False) -> torch.Tensor:
    """uint8 N×C×S×S → float in [-1, 1]; ``augment`` adds random flips and ±S/16 pixel shifts."""
    x = to_tensor(images, channels_last=False)
    if augment:
        x = random_flip(x)
        pad = max(1, x.shape[-1] // 16)
        padded = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
        dx, dy = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = padded[..., dy: dy + x.shape[-2], dx: dx + x.shape[-1]]
    return x
