"""Network definitions, with no face-analysis or training code: the recogniser backbones
(MobileFaceNet, IResNet, Face Transformer), facexlib's published IR-SE50, the margin heads they train
with (ArcFace, CosFace, AdaFace), and the one input convention of all of them (:func:`to_tensor`). Everything above
(:mod:`idgen.faces`, :mod:`idgen.recognition`, :mod:`idgen.unlearn`) builds on these."""

from .backbones import BACKBONES, build_backbone, save_recognizer
from .face_transformer import PRESETS, FaceRecognizer, FaceTransformerConfig, model_config
from .heads import HEADS, AdaFaceHead, MarginHead, margin_head
from .inputs import to_tensor
from .iresnet import DEPTHS as IRESNET_DEPTHS
from .iresnet import IResNet, load_insightface_iresnet
from .ir_se50 import IRSE, load_ir_se
from .mobilefacenet import MobileFaceNet

__all__ = ["BACKBONES", "HEADS", "IRESNET_DEPTHS", "PRESETS", "AdaFaceHead", "FaceRecognizer", "FaceTransformerConfig",
           "IResNet", "IRSE", "MarginHead", "MobileFaceNet", "build_backbone", "load_insightface_iresnet", "load_ir_se",
           "margin_head", "model_config", "save_recognizer", "to_tensor"]
