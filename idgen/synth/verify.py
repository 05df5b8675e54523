"""``verify_dataset(folder)``: check a finished dataset folder against its own manifest.

What is checked (read-only; nothing is written or repaired):

- the folder holds a dataset (``config.json``) that was assembled (``manifest.jsonl``, ``stats.json``);
- counts: the manifest has as many images as ``stats.json`` says, at most one per image slot, only
  of the dataset's identities and at most ``images_per_identity`` each;
- files against the manifest: every listed image exists under ``images/`` with the sha256 the
  manifest records, and no image is there that the manifest does not list;
- every shard of each format the dataset was written in (parquet, WebDataset) is present, readable,
  and holds exactly the manifest's images, in its order, with the same bytes.

Every problem found is reported, each naming its file; a folder made by many processes or machines
is checked the same way as one made by one process.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from ..errors import DataError
from .writers import parquet_shard_name, shard_count, webdataset_shard_name

#: At most this many problems are spelled out in the error (the count says how many there are).
LISTED_PROBLEMS = 20
#: How to repair what the check found.
REPAIR = ("Regenerate a damaged or missing image by deleting its identity's line from journal/ and rerunning the "
          "same `idgen dataset generate` command; a damaged or missing shard by rerunning it as it is")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {what}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc}); {what}") from None


def _read_manifest(folder: Path, problems: list[str]) -> list[dict]:
    path = folder / "manifest.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: missing: the dataset was not assembled; run the same `idgen dataset generate` "
                        "command again to finish it")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not {"file", "identity", "index", "label", "sha256"} <= set(record):
                raise ValueError("not a manifest record")
        except ValueError as exc:
            problems.append(f"manifest.jsonl line {number}: {exc}")
            continue
        records.append(record)
    return records


def _check_counts(records: list[dict], settings: dict, stats: dict, problems: list[str]) -> None:
    if stats.get("images") != len(records):
        problems.append(f"manifest.jsonl: lists {len(records)} images, stats.json says {stats.get('images')}")
    identities, per_identity = settings["identities"]["count"], settings["variation"]["images_per_identity"]
    seen, per_label = set(), {}
    for record in records:
        label, index = record["label"], record["index"]
        if (label, index) in seen:
            problems.append(f"manifest.jsonl: {record['file']} is listed twice")
        seen.add((label, index))
        per_label[label] = per_label.get(label, 0) + 1
        if not (isinstance(label, int) and 0 <= label < identities and isinstance(index, int) and 0 <= index < per_identity):
            problems.append(f"manifest.jsonl: {record['file']} is image {index} of identity {label}, outside the "
                            f"dataset's {identities} identities × {per_identity} images")
    if stats.get("identities_with_images") != len(per_label):
        problems.append(f"manifest.jsonl: has images of {len(per_label)} identities, stats.json says "
                        f"{stats.get('identities_with_images')}")


def _check_images(folder: Path, records: list[dict], problems: list[str]) -> None:
    listed = set()
    for record in records:
        name = record["file"]
        if name != f"images/{record['identity']}/{record['index']}.jpg":   # never read a path a file names
            problems.append(f"manifest.jsonl: {name!r} is not where the dataset keeps image {record['index']} "
                            f"of {record['identity']}")
            continue
        listed.add(name)
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: listed in manifest.jsonl but missing")
        elif _sha256(path.read_bytes()) != record["sha256"]:
            problems.append(f"{name}: its sha256 differs from the one in manifest.jsonl (the file is corrupted "
                            "or was changed)")
    for path in sorted((folder / "images").rglob("*.jpg")):
        name = path.relative_to(folder).as_posix()
        if name not in listed:
            problems.append(f"{name}: not listed in manifest.jsonl")


def _expect_shards(folder: Path, names: list[str], problems: list[str]) -> list[Path]:
    """The shards of ``names`` present in ``folder``; a problem for each one missing or extra."""
    present = {p.name for p in folder.glob("train-*")} if folder.is_dir() else set()
    for name in names:
        if name not in present:
            problems.append(f"{folder.name}/{name}: missing (the manifest's images make {len(names)} shards)")
    for name in sorted(present - set(names)):
        problems.append(f"{folder.name}/{name}: not a shard of this dataset (it makes {len(names)})")
    return [folder / name for name in names if name in present]


def _compare_shard(shard: str, found: list[tuple[str, int, str]], expected: list[dict], problems: list[str]) -> None:
    """``found``: (identity, index, sha256) of each image of ``shard``, against its manifest records."""
    wanted = [(r["identity"], r["index"], r["sha256"]) for r in expected]
    if found != wanted:
        differing = next((i for i, (a, b) in enumerate(zip(found, wanted)) if a != b), min(len(found), len(wanted)))
        problems.append(f"{shard}: holds {len(found)} images, the manifest puts {len(wanted)} there, and they first "
                        f"differ at image {differing} of the shard (corrupted, or from another run)")


def _check_parquet(folder: Path, records: list[dict], shard_size: int, problems: list[str]) -> None:
    import pyarrow.parquet as pq

    count = shard_count(len(records), shard_size)
    present = set(_expect_shards(folder / "data", [parquet_shard_name(i, count) for i in range(count)], problems))
    for i in range(count):
        path = folder / "data" / parquet_shard_name(i, count)
        if path not in present:
            continue
        try:
            table = pq.read_table(path, columns=["image", "identity", "index"]).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            problems.append(f"data/{path.name}: cannot be read as parquet ({exc})")
            continue
        found = [(row["identity"], row["index"], _sha256(row["image"]["bytes"])) for row in table]
        _compare_shard(f"data/{path.name}", found, records[i * shard_size:(i + 1) * shard_size], problems)


def _check_webdataset(folder: Path, records: list[dict], shard_size: int, problems: list[str]) -> None:
    count = shard_count(len(records), shard_size)
    present = set(_expect_shards(folder / "webdataset", [webdataset_shard_name(i) for i in range(count)], problems))
    for i in range(count):
        path = folder / "webdataset" / webdataset_shard_name(i)
        if path not in present:
            continue
        try:
            with tarfile.open(path) as tar:
                found = []
                for member in tar.getmembers():
                    if member.name.endswith(".jpg"):
                        identity, _, index = member.name[:-4].rpartition("_")
                        found.append((identity, int(index), _sha256(tar.extractfile(member).read())))
        except (tarfile.TarError, OSError, ValueError) as exc:
            problems.append(f"webdataset/{path.name}: cannot be read as a tar file ({exc})")
            continue
        _compare_shard(f"webdataset/{path.name}", found, records[i * shard_size:(i + 1) * shard_size], problems)


def verify_dataset(folder) -> dict:
    """Check the dataset in ``folder`` (see the module docstring) and return what it holds:
    ``{"images", "identities", "formats", "shards"}``.

    Raises :class:`~idgen.errors.DataError` listing the problems found (one line, the first
    :data:`LISTED_PROBLEMS` spelled out), each naming its file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; give the output folder of `idgen dataset generate`")
    saved = _read_json(folder / "config.json", "this is not a folder written by `idgen dataset generate`")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise DataError(f"{folder / 'config.json'}: not the settings file of `idgen dataset generate`")
    settings = saved["config"]
    stats = _read_json(folder / "stats.json", "the dataset was not assembled; run the same `idgen dataset "
                                              "generate` command again to finish it")
    problems: list[str] = []
    records = _read_manifest(folder, problems)
    _check_counts(records, settings, stats, problems)
    _check_images(folder, records, problems)
    formats, shard_size = settings["writers"]["formats"], settings["writers"]["shard_size"]
    if "parquet" in formats:
        _check_parquet(folder, records, shard_size, problems)
    if "webdataset" in formats:
        _check_webdataset(folder, records, shard_size, problems)
    if problems:
        more = f"; and {len(problems) - LISTED_PROBLEMS} more" if len(problems) > LISTED_PROBLEMS else ""
        raise DataError(f"{folder}: {len(problems)} problem(s) found: {'; '.join(problems[:LISTED_PROBLEMS])}{more}. "
                        f"{REPAIR}")
    return {"images": len(records), "identities": len({r["label"] for r in records}), "formats": formats,
            "shards": {kind: shard_count(len(records), shard_size) for kind in ("parquet", "webdataset")
                       if kind in formats}}
