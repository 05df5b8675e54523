"""Where a server keeps what its requests write: one folder per server, bounded, removed at the end.

A :class:`Workspace` is one ``idgen-demo-*`` folder under the system's temporary folder, made on first
use. Each request works in a new folder of its own (:meth:`Workspace.request`); what is worth
keeping across requests (a recogniser trained on one face folder) lives in :attr:`Workspace.cache`,
under a name that says what it holds. Both are :class:`FolderLRU`: only the most recently used
folders are kept, the older ones deleted as new ones come, never one in use. :meth:`Workspace.close`
deletes the whole folder (the demo calls it when its server closes, and at the latest when the
process exits).
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..errors import DataError


class FolderLRU:
    """At most ``keep`` named sub-folders of ``root``: using one (:meth:`use`) makes it the most
    recent; when there are more than ``keep``, the least recently used ones that nothing is using
    are deleted."""

    def __init__(self, root: Path, keep: int):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.root, self.keep = Path(root), keep
        self._order: OrderedDict[str, None] = OrderedDict()   # least recently used first
        self._busy: Counter = Counter()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The folders kept, least recently used first."""
        with self._lock:
            return list(self._order)

    @contextmanager
    def use(self, name: str, create: bool = True) -> Iterator[Path]:
        """The folder ``name``, made when new (``create``; otherwise a name not kept is a ``KeyError``),
        safe from deletion until the block ends; it is the most recent both on entry and on exit (so a
        long job that just finished is not the first to go)."""
        with self._lock:
            if name not in self._order:
                if not create:
                    raise KeyError(name)
                (self.root / name).mkdir(parents=True, exist_ok=True)
            self._order[name] = None
            self._order.move_to_end(name)
            self._busy[name] += 1
            self._prune()
        try:
            yield self.root / name
        finally:
            with self._lock:
                self._busy[name] -= 1
                if name in self._order:
                    self._order.move_to_end(name)
                self._prune()

    def discard(self, name: str) -> None:
        """Delete ``name`` now (a request that failed), even while in use."""
        with self._lock:
            self._order.pop(name, None)
            shutil.rmtree(self.root / name, ignore_errors=True)

    def _prune(self) -> None:
        idle = [name for name in self._order if not self._busy[name]]
        for name in idle[:max(0, len(self._order) - self.keep)]:
            del self._order[name]
            shutil.rmtree(self.root / name, ignore_errors=True)


class Workspace:
    """The folder of one server: ``requests/`` (the last ``keep_requests`` requests' folders) and
    ``cache/`` (the last ``keep_cached`` cache entries), made on first use, so a page that serves
    nothing leaves nothing."""

    def __init__(self, keep_requests: int = 32, keep_cached: int = 4):
        self._keep = (keep_requests, keep_cached)
        self._root: Optional[Path] = None
        self._shelves: tuple[FolderLRU, FolderLRU] | None = None
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        atexit.register(self.close)

    @property
    def root(self) -> Path:
        return self._made()[0]

    @property
    def requests(self) -> FolderLRU:
        return self._made()[1][0]

    @property
    def cache(self) -> FolderLRU:
        return self._made()[1][1]

    def _made(self) -> tuple[Path, tuple[FolderLRU, FolderLRU]]:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="idgen-demo-"))
                self._shelves = (FolderLRU(self._root / "requests", self._keep[0]),
                                 FolderLRU(self._root / "cache", self._keep[1]))
            return self._root, self._shelves

    @contextmanager
    def request(self, kind: str) -> Iterator[Path]:
        """A new, empty folder for one request (named ``NNNNNN-kind``; its name is the token
        :meth:`reopen` takes). When the block raises, the folder and all it holds are deleted."""
        requests = self.requests
        name = f"{next(self._numbers):06d}-{kind}"
        with requests.use(name) as folder:
            try:
                yield folder
            except BaseException:
                requests.discard(name)
                raise

    @contextmanager
    def reopen(self, token: str, what: str) -> Iterator[Path]:
        """The folder of an earlier request (``token``: its folder's name), kept from deletion until
        the block ends; a :class:`~idgen.errors.DataError` saying that ``what`` is gone when it was pruned."""
        requests = self.requests
        with ExitStack() as stack:
            try:
                folder = stack.enter_context(requests.use(token, create=False))
            except KeyError:
                raise DataError(f"{what} is no longer kept (the server keeps the files of its {requests.keep} "
                                "latest requests); make it again") from None
            yield folder

    def close(self) -> None:
        """Delete the workspace folder and everything in it."""
        with self._lock:
            root, self._root, self._shelves = self._root, None, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
