"""The journal: which identities are finished, so a killed run resumes where it stopped.

Each process appends one JSON line per finished identity to its own file
``journal/rank-R-of-W.jsonl`` and fsyncs it; the line is written only after the identity's images
are on disk. A kill can leave at most a truncated last line, which readers ignore and the owner
removes before appending again. Reading takes every file in the folder, so a run may resume with a
different number of processes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..io import write_bytes_atomic


def _valid_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_bytes().split(b"\n"):
        try:
            json.loads(line)
        except ValueError:  # empty, or cut short by a kill
            continue
        lines.append(line.decode())
    return lines


class Journal:
    def __init__(self, folder: str | os.PathLike, rank: int = 0, world: int = 1):
        self.folder = Path(folder)
        self.path = self.folder / f"rank-{rank}-of-{world}.jsonl"
        self._lock = threading.Lock()
        self._handle = None

    def entries(self) -> dict[int, dict]:
        """Finished identities of every process: identity index -> its journal entry."""
        found = {}
        for path in sorted(self.folder.glob("rank-*.jsonl")):
            for line in _valid_lines(path):
                entry = json.loads(line)
                found[entry["identity"]] = entry
        return found

    def open(self) -> "Journal":
        """Start appending, after dropping a truncated tail left by a kill."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            write_bytes_atomic(self.path, "".join(line + "\n" for line in _valid_lines(self.path)).encode())
        self._handle = open(self.path, "a", encoding="utf-8")
        return self

    def append(self, entry: dict) -> None:
        with self._lock:
            self._handle.write(json.dumps(entry, sort_keys=True) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
