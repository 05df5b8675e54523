"""Network definitions, with no face-analysis or training code: the recogniser backbones
(MobileFaceNet, Face Transformer), the margin heads they train with, and the one input convention of
both (:func:`to_tensor`). Everything above (:mod:`idgen.faces`, :mod:`idgen.recognition`,
:mod:`idgen.unlearn`) builds on these."""

from .face_transformer import PRESETS, FaceRecognizer, FaceTransformerConfig, model_config
from .heads import MarginHead
from .inputs import to_tensor
from .mobilefacenet import MobileFaceNet

__all__ = ["PRESETS", "FaceRecognizer", "FaceTransformerConfig", "MarginHead", "MobileFaceNet", "model_config",
           "to_tensor"]
