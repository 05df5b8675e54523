"""Network definitions, with no face-analysis or training code: the recogniser backbones
(MobileFaceNet, Face Transformer) and the margin heads they train with. Everything above
(:mod:`idgen.faces`, :mod:`idgen.fr`, :mod:`idgen.recognition`, :mod:`idgen.unlearn`) builds on these."""

from .face_transformer import PRESETS, FaceRecognizer, FaceTransformerConfig, model_config
from .heads import MarginHead
from .mobilefacenet import MobileFaceNet, to_tensor

__all__ = ["PRESETS", "FaceRecognizer", "FaceTransformerConfig", "MarginHead", "MobileFaceNet", "model_config",
           "to_tensor"]
