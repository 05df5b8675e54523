"""Dataset formats, assembled from the finished ImageFolder and the per-image records.

The images themselves are written once, as ``images/<identity>/<n>.jpg`` (the ImageFolder format),
while they are generated. Every other format is assembled from those JPEG bytes at the end, in a
fixed order with fixed metadata, so the same dataset always gives byte-identical files:

- ``manifest.jsonl`` — one line per image (identity, seed, perturbation, similarity, prompt and
  pose indices when they vary, parameters, sha256 of the file);
- ``data/train-XXXXX-of-YYYYY.parquet`` — Hugging Face ``datasets`` parquet shards (an ``image``
  column of JPEG bytes plus the manifest fields), written by ``datasets.Dataset.to_parquet`` and
  read by ``datasets.load_dataset``;
- ``webdataset/train-XXXXXX.tar`` — WebDataset shards: ``<key>.jpg``, ``<key>.cls``, ``<key>.json``,
  written here (``datasets`` writes no WebDataset), every tar header fixed (time 0, no owner).

Each shard is written to a temporary name, flushed to the disk and renamed; the caller gives each
writer an empty staging folder and renames it into place once every shard is written, so a folder
of shards is always whole.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Callable, Sequence

from ..io import atomic_path, write_bytes_atomic
from ..quiet import datasets_bars_hidden

FORMATS = ("imagefolder", "parquet", "webdataset")

#: Manifest fields copied into the parquet columns (besides ``image``).
PARQUET_COLUMNS = {"label": "int64", "identity": "string", "index": "int32", "seed": "int64",
                   "attempt": "int32", "similarity": "float32", "perturbation": "float32"}
#: Columns present when the run varies prompts, poses or expressions (every record then has them).
CHOICE_COLUMNS = {"prompt_index": "int32", "prompt": "string", "pose_index": "int32", "expression_index": "int32"}

#: The shard names each format's writer gives (the only files of ``data/`` and ``webdataset/``).
SHARD_NAMES = {"parquet": re.compile(r"train-\d{5}-of-\d{5}\.parquet"), "webdataset": re.compile(r"train-\d{6}\.tar")}


def shard_count(images: int, shard_size: int) -> int:
    """How many shards a format splits ``images`` records into (one, empty, when there are none)."""
    return max(1, -(-images // shard_size))


def parquet_shard_name(index: int, count: int) -> str:
    return f"train-{index:05d}-of-{count:05d}.parquet"


def webdataset_shard_name(index: int) -> str:
    return f"train-{index:06d}.tar"


def write_manifest(records: Sequence[dict], path: Path) -> None:
    lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    write_bytes_atomic(path, lines.encode())


def _shards(records: Sequence[dict], size: int) -> list[Sequence[dict]]:
    return [records[i:i + size] for i in range(0, len(records), size)] or [records[:0]]


def write_parquet(records: Sequence[dict], read: Callable[[dict], bytes], folder: Path, shard_size: int) -> list[Path]:
    """The parquet shards of ``records``, written into the empty ``folder`` by ``datasets``
    (``Dataset.to_parquet``: content-defined chunking, as ``push_to_hub`` writes them, so the Hub
    stores only what changed between two versions of a dataset)."""
    import datasets

    present = {**PARQUET_COLUMNS, **{k: v for k, v in CHOICE_COLUMNS.items() if records and k in records[0]}}
    features = datasets.Features({"image": datasets.Image(), **{k: datasets.Value(v) for k, v in present.items()}})
    shards = _shards(records, shard_size)
    paths = [folder / parquet_shard_name(i, len(shards)) for i in range(len(shards))]
    with datasets_bars_hidden():
        for shard, path in zip(shards, paths):
            columns = {"image": [{"bytes": read(r), "path": r["file"].split("/", 1)[1]} for r in shard]}
            for name in present:
                columns[name] = [r.get(name) for r in shard]
            with atomic_path(path) as tmp:
                datasets.Dataset.from_dict(columns, features=features).to_parquet(tmp)
    return paths


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(records: Sequence[dict], read: Callable[[dict], bytes], folder: Path, shard_size: int) -> list[Path]:
    """The WebDataset shards of ``records``, written into the empty ``folder``."""
    shards = _shards(records, shard_size)
    paths = [folder / webdataset_shard_name(i) for i in range(len(shards))]
    for shard, path in zip(shards, paths):
        with atomic_path(path) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for record in shard:
                    key = f"{record['identity']}_{record['index']}"
                    _tar_member(tar, f"{key}.jpg", read(record))
                    _tar_member(tar, f"{key}.cls", str(record["label"]).encode())
                    _tar_member(tar, f"{key}.json", json.dumps(record, sort_keys=True).encode())
    return paths
