"""Exception types raised by idgen.

Every error says which file (or input) is at fault and what to do about it, so that a user of the
library, the CLI or the demo never has to read a traceback to fix their input.
"""

from __future__ import annotations


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
    """A configuration file or option is invalid."""


class DataError(IdgenError, ValueError):
    """The data a command was pointed at cannot be used: a folder without one usable face photo, a
    malformed pairs or people list, a face set without the columns it needs."""


class OutputError(IdgenError):
    """An output cannot be written where it was asked for: a folder that holds someone else's files,
    a file where a folder goes (or the reverse), a read-only folder, a full disk."""
