"""Exception types raised by idgen.

Every error says which file (or input) is at fault and what to do about it, so that a user of the
library, the CLI or the demo never has to read a traceback to fix their input.
"""

from __future__ import annotations

import sys


class IdgenError(Exception):
    """Base class of every error idgen raises on purpose."""


class ImageReadError(IdgenError, ValueError):
    """An input file is missing, not an image, or corrupt."""


class NoFaceError(IdgenError, ValueError):
    """No face was found where one was required."""


class MultipleFacesError(IdgenError, ValueError):
    """Several faces were found where exactly one was required."""


class ModelFilesMissingError(IdgenError, FileNotFoundError):
    """Model weights that a backend needs are not on disk."""


class ConfigError(IdgenError, ValueError):
    """A configuration file or option is invalid. ``key`` is the dotted config key at fault (such as
    ``identities.count``), when there is one, so that a loader can name where its value came from."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class DataError(IdgenError, ValueError):
    """The data a command was pointed at cannot be used: a folder without one usable face photo, a
    malformed pairs or people list, a face set without the columns it needs."""


class OutputError(IdgenError):
    """An output cannot be written where it was asked for: a folder that holds someone else's files,
    a file where a folder goes (or the reverse), a read-only folder, a full disk."""


class ShadowedPackageError(IdgenError, ImportError):
    """``import idgen`` found a folder named ``idgen`` that is not the package: a clone of the
    repository, seen from the folder that contains it."""


def _refuse_a_shadowing_folder() -> None:
    """Raise :class:`ShadowedPackageError` when ``idgen`` itself was imported as a namespace package.

    Python looks in the current folder first; there, a clone of the repository (a folder named
    ``idgen`` without an ``__init__.py`` at its top) becomes ``idgen`` ahead of an editable install,
    whose finder comes after the folder search, so ``idgen/__init__.py`` never runs and the clone's
    top folders (``pipelines``, ``training``) stand in for the package's modules. Almost every idgen
    module imports this one, directly or through another, so that mix stops here with what to do
    instead of failing somewhere inside.
    """
    package = sys.modules.get(__name__.rpartition(".")[0])
    if package is None or getattr(package, "__file__", None) is not None:
        return
    folder = next(iter(package.__path__), "idgen")
    raise ShadowedPackageError(
        f"`import idgen` found the folder {folder} instead of the idgen package: you are running Python from "
        f"the folder that contains the idgen clone. Run it from another folder, or from inside the clone "
        f"(cd {folder})")


_refuse_a_shadowing_folder()
