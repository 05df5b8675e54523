"""Labelled face sets for recogniser training, read from any format ``idgen dataset generate`` writes.

- ImageFolder: ``<root>/<identity>/<image>`` (the synth output's ``images/``);
- Hugging Face parquet: ``.parquet`` files with an ``image`` column (JPEG/PNG bytes) and ``label``
  (the synth output's ``data/``; ``datasets.load_dataset`` reads the same files);
- WebDataset: ``.tar`` shards of ``<key>.jpg`` + ``<key>.cls`` (the synth output's ``webdataset/``).

Every image is aligned once to the ArcFace template with :mod:`idgen.faces` — by detected
landmarks (``align="dlib"``) or, for sets that are already aligned (LFW deep-funneled, generator
outputs), by placing the template in a centred box (``align="box"``) — and the uint8 crops are
cached by :mod:`idgen.faces.cache`, keyed by each image's bytes and the alignment settings.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..faces import iter_image_files
from ..faces.cache import Alignment, aligned_crops

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


def read_image_folder(root: Path) -> LabelledImages:
    people = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, person in enumerate(people):
        files = list(iter_image_files(root / person))
        images += [Path(f) for f in files]
        labels += [label] * len(files)
    return _labelled(images, labels, dict(enumerate(people)), root)


def read_parquet(files: list[Path]) -> LabelledImages:
    import pyarrow.parquet as pq

    images, labels, names = [], [], {}
    for path in files:
        table = pq.read_table(path)
        if "image" not in table.column_names or "label" not in table.column_names:
            raise DataError(f"{path}: a face set needs 'image' and 'label' columns, found {table.column_names}")
        batch_labels = table.column("label").to_pylist()
        for cell in table.column("image").to_pylist():
            if not cell or not cell.get("bytes"):
                raise DataError(f"{path}: an image cell holds no bytes; write the shards with embedded images "
                                  "(as `idgen dataset generate` and `datasets.Dataset.to_parquet` do)")
            images.append(cell["bytes"])
        if "identity" in table.column_names:
            names.update(zip(batch_labels, table.column("identity").to_pylist()))
        labels += batch_labels
    return _labelled(images, labels, names, files[0].parent)


def read_webdataset(files: list[Path]) -> LabelledImages:
    images, labels, names = [], [], {}
    for path in files:
        samples: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
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
        if not path.is_dir():
            raise DataError(f"{path}: an ImageFolder face set is a folder of <identity>/<image> folders")
        return read_image_folder(path)
    files = shards("*.parquet", "data") if format == "parquet" else shards("*.tar", "webdataset")
    if not files:
        raise DataError(f"{path}: no {format} shards found")
    return read_parquet(files) if format == "parquet" else read_webdataset(files)


def align_images(images: list, size: int, align: str = "dlib", box: float = 0.42, upsample: int = 0,
                 cache_dir: str | Path | None = None, progress: bool = True) -> np.ndarray:
    """N×size×size×3 uint8 crops aligned to the ArcFace template (scaled to ``size``).

    ``align="dlib"``: dlib landmarks, and where dlib finds no face its landmarks inside the
    centred ``box`` (see ``FaceAnalyzer(fallback_box=...)``), detected after ``upsample`` doublings
    (0, the idgen default, is enough for faces over ~80 px); ``align="box"``: the template in that box.
    The crops are cached in ``cache_dir`` by :mod:`idgen.faces.cache`.
    """
    if align not in ALIGNMENTS:
        raise ConfigError(f"unknown alignment {align!r}; use one of {ALIGNMENTS}")
    return aligned_crops(images, Alignment(align, size, box, upsample), cache_dir, progress=progress)
