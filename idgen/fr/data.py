"""Face sets for recogniser training, from any of the formats ``idgen dataset generate`` writes.

- an ImageFolder: ``<root>/<identity>/<image>`` (labels by sorted folder name);
- Hugging Face parquet: a ``.parquet`` file, or a folder with ``data/*.parquet`` (columns ``image``
  and ``label``);
- WebDataset: a ``.tar`` shard or a folder of them (``<key>.jpg`` + ``<key>.cls``).

Images are taken as face crops: a centred square of ``crop`` × the shorter side is warped to
``input_size`` with the same alignment code the analyzer uses for a centred ``fallback_box``, so a
model trained here is evaluated on identical crops with ``FaceAnalyzer(..., fallback_box=crop)``.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..faces import ARCFACE_TEMPLATE, align_face, iter_image_files, load_image
from ..faces.analyzer import _center_box


def centre_crop(rgb: np.ndarray, crop: float, size: int) -> np.ndarray:
    box = _center_box(*rgb.shape[:2], crop)
    landmarks = box[:2] + ARCFACE_TEMPLATE / 112.0 * (box[2] - box[0])
    return align_face(rgb, landmarks, size)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """N×S×S×3 uint8 -> N×3×S×S float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _image_folder(root: Path) -> tuple[list, list]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    items, labels = [], []
    for label, name in enumerate(classes):
        for path in iter_image_files(root / name):
            items.append(path)
            labels.append(label)
    return items, labels


def _parquet(files: list[Path]) -> tuple[list, list]:
    import pyarrow.parquet as pq

    items, labels = [], []
    for path in files:
        table = pq.read_table(path, columns=["image", "label"])
        items += [cell["bytes"] for cell in table.column("image").to_pylist()]
        labels += table.column("label").to_pylist()
    return items, labels


def _webdataset(files: list[Path]) -> tuple[list, list]:
    items, labels = [], []
    for path in files:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, member in members.items():
                key, ext = name.rsplit(".", 1)
                if ext in ("jpg", "jpeg", "png") and f"{key}.cls" in members:
                    items.append((path, member.offset_data, member.size))
                    labels.append(int(tar.extractfile(members[f"{key}.cls"]).read()))
    return items, labels


class FaceSet(torch.utils.data.Dataset):
    def __init__(self, source: str, input_size: int = 112, crop: float = 1.0, flip: bool = True):
        path = Path(source)
        if path.suffix == ".parquet" or (path / "data").is_dir() and list((path / "data").glob("*.parquet")):
            items, labels = _parquet([path] if path.is_file() else sorted((path / "data").glob("*.parquet")))
        elif path.suffix == ".tar" or (path.is_dir() and list(path.glob("*.tar"))):
            items, labels = _webdataset([path] if path.is_file() else sorted(path.glob("*.tar")))
        elif path.is_dir():
            items, labels = _image_folder(path)
        else:
            raise ConfigError(f"{source}: not an ImageFolder, parquet or WebDataset face set")
        if not items:
            raise ConfigError(f"{source}: no labelled images found")
        _, self.labels = np.unique(labels, return_inverse=True)  # labels 0..C-1 even if some are unused
        self.items, self.classes = items, int(self.labels.max()) + 1
        self.input_size, self.crop, self.flip = input_size, crop, flip

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, item) -> np.ndarray:
        if isinstance(item, tuple):  # (tar file, offset, size)
            with open(item[0], "rb") as handle:
                handle.seek(item[1])
                item = handle.read(item[2])
        if isinstance(item, bytes):
            item = Image.open(io.BytesIO(item))
        return load_image(item)

    def __getitem__(self, index: int):
        crop = centre_crop(self._read(self.items[index]), self.crop, self.input_size)
        if self.flip and torch.rand(()) < 0.5:
            crop = crop[:, ::-1]
        return to_tensor(crop[None])[0], int(self.labels[index])
