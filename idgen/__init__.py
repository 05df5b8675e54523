"""idgen: identity-preserving face synthesis and editing on diffusers."""

from .errors import (ConfigError, DataError, IdgenError, ImageReadError, ModelFilesMissingError,
                     MultipleFacesError, NoFaceError, OutputError)
from .quiet import silence_third_party_noise

silence_third_party_noise()

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "IdgenError", "ImageReadError", "ModelFilesMissingError",
           "MultipleFacesError", "NoFaceError", "OutputError", "__version__"]
