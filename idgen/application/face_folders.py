"""Where the Forget → Recogniser tab reads its photos from: never a path that a client names.

:func:`open_face_folder` turns the page's choice into a folder on the server, one of:

* ``upload``: a zip the client uploaded, one folder of photos per person, unpacked by
  :func:`extract_face_zip` into the request's own folder once every entry's path and size has been
  checked;
* ``dataset``: the dataset the Dataset tab made for this visitor, found by the name of that request's
  folder in the server's :class:`~.workspace.Workspace` (the page's session keeps it on the server;
  the client never sees it);
* ``folder:N``: the N-th folder the operator allowed with ``python app.py --allow-folder PATH``
  (:attr:`~.models.ModelSettings.allow_folders`; none by default).

Anything else is refused with the same message whatever it names, so a response never tells
whether some path exists on the server.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Sequence

from ..errors import ConfigError, DataError
from ..faces.analyzer import IMAGE_EXTENSIONS
from ..io import atomic_folder
from .workspace import Workspace

UPLOAD, DATASET = "upload", "dataset"
#: Limits of an uploaded zip, checked from its table of contents before anything is unpacked.
MAX_ZIP_PHOTOS = 5_000
MAX_ZIP_BYTES = 512 * 2**20          # all photos together, unpacked
MAX_PHOTO_BYTES = 32 * 2**20         # one photo, unpacked


@dataclass(frozen=True)
class FaceFolder:
    """A folder of one sub-folder of photos per person, and what messages call it (the zip's own
    name, the Dataset tab's dataset, or the allowed folder as the operator named it)."""

    path: Path
    label: str


def face_sources(allowed: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, value)`` of every source the page offers: an upload, this page's dataset, and each
    allowed folder."""
    return [("a zip I upload (one folder of photos per person)", UPLOAD), ("the Dataset tab's dataset", DATASET),
            *[(f"server folder {path}", value) for value, path in _allowed_by_value(allowed).items()]]


def default_source(allowed: Sequence[str]) -> str:
    """The source the page starts with: the first allowed folder, else an upload."""
    return next(iter(_allowed_by_value(allowed)), UPLOAD)


def _allowed_by_value(allowed: Sequence[str]) -> dict[str, str]:
    return {f"folder:{index}": path for index, path in enumerate(allowed)}


@contextmanager
def open_face_folder(source: str, *, allowed: Sequence[str], workspace: Workspace, workdir: Path,
                     upload: Optional[str] = None, dataset: Optional[str] = None) -> Iterator[FaceFolder]:
    """The face folder of ``source`` (a value of :func:`face_sources`), safe from the workspace's
    pruning until the block ends. ``upload`` is the uploaded zip (unpacked into ``workdir/faces``),
    ``dataset`` the workspace token of the page's dataset request."""
    folders = _allowed_by_value(allowed)
    if source == UPLOAD:
        if not upload:
            raise DataError("no zip uploaded: upload a zip with one folder of photos per person")
        yield FaceFolder(extract_face_zip(Path(upload), workdir / "faces"), Path(upload).name)
    elif source == DATASET:
        if not dataset:
            raise DataError("the Dataset tab has made no dataset on this page yet: make one there, or upload a zip")
        with workspace.reopen(dataset, "the Dataset tab's dataset") as folder:
            yield FaceFolder(folder / "dataset" / "images", "the Dataset tab's dataset")
    elif source in folders:
        yield FaceFolder(Path(folders[source]), folders[source])
    else:
        raise ConfigError(f"unknown face source {source!r}; choose one the page offers: "
                          + ", ".join(value for _, value in face_sources(allowed)))


def extract_face_zip(archive: Path, target: Path) -> Path:
    """Unpack the photos of ``archive`` into ``target`` (made in one step) as ``target/PERSON/PHOTO``.

    The zip holds one folder per person, possibly all inside one top folder; files that are not
    photos (by extension, :data:`~idgen.faces.analyzer.IMAGE_EXTENSIONS`), hidden files and
    ``__MACOSX/`` are skipped. Refused with a
    :class:`~idgen.errors.DataError` naming the zip (by its own name) before anything is written: not
    a zip; an entry with an absolute path, a ``..`` part, a backslash or a drive, or a link; photos
    not in a person's folder, or nested deeper; more than :data:`MAX_ZIP_PHOTOS` photos, one over
    :data:`MAX_PHOTO_BYTES` or all over :data:`MAX_ZIP_BYTES` unpacked; fewer than two people with at
    least two photos each. Unpacking stops at each entry's declared size, so a zip that lies about
    its sizes cannot write more than was checked.
    """
    name = archive.name
    try:
        with zipfile.ZipFile(archive) as zipped:
            photos = _checked_photos(zipped, name)
            with atomic_folder(target) as staging:
                for info, (person, photo) in photos:
                    (staging / person).mkdir(exist_ok=True)
                    with zipped.open(info) as source, open(staging / person / photo, "wb") as out:
                        shutil.copyfileobj(source, out, length=2**20)
    except zipfile.BadZipFile as error:
        raise DataError(f"{name}: not a readable zip file ({error}); zip the folder of people again") from None
    return target


def _checked_photos(zipped: zipfile.ZipFile, name: str) -> list[tuple[zipfile.ZipInfo, tuple[str, str]]]:
    """The photo entries of ``zipped`` with their (person, file name), every check of
    :func:`extract_face_zip` done."""
    entries = []
    for info in zipped.infolist():
        parts = _safe_parts(info, name)
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS:
            entries.append((info, parts))
        if len(entries) > MAX_ZIP_PHOTOS:
            raise DataError(f"{name}: more than {MAX_ZIP_PHOTOS} photos; upload at most {MAX_ZIP_PHOTOS}")
    tops = {parts[0] for _, parts in entries}
    strip = 1 if len(tops) == 1 and all(len(parts) == 3 for _, parts in entries) else 0
    photos = []
    for info, parts in entries:
        if len(parts) - strip != 2:
            raise DataError(f"{name}: {info.filename!r} is not in a person's folder; the zip must hold one folder "
                            "of photos per person (PERSON/PHOTO.jpg), possibly inside one top folder")
        if info.file_size > MAX_PHOTO_BYTES:
            raise DataError(f"{name}: {info.filename!r} unpacks to {info.file_size:,} bytes, more than the "
                            f"{MAX_PHOTO_BYTES:,} a photo may have")
        photos.append((info, (parts[strip], parts[strip + 1])))
    total = sum(info.file_size for info, _ in photos)
    if total > MAX_ZIP_BYTES:
        raise DataError(f"{name}: the photos unpack to {total:,} bytes, more than {MAX_ZIP_BYTES:,}; upload fewer")
    counts: dict[str, int] = {}
    for _, (person, _) in photos:
        counts[person] = counts.get(person, 0) + 1
    people = sum(count >= 2 for count in counts.values())
    if people < 2:
        raise DataError(f"{name}: {people} folder(s) with at least 2 photos; forgetting needs at least 2 people "
                        "with 2 or more photos each (one for training, one for testing)")
    return photos


def _safe_parts(info: zipfile.ZipInfo, name: str) -> tuple[str, ...]:
    """The parts of an entry's path, or a DataError when it could land outside the folder it is
    unpacked into (absolute, ``..``, backslash, drive letter) or is a link."""
    member = info.filename
    parts = PurePosixPath(member).parts
    is_link = stat.S_ISLNK(info.external_attr >> 16)
    drive = len(member) > 1 and member[1] == ":"
    if is_link or not parts or member.startswith("/") or "\\" in member or drive or ".." in parts:
        raise DataError(f"{name}: the entry {member!r} " + ("is a link" if is_link else "points outside the zip's folder")
                        + "; refused, nothing was unpacked")
    return parts
