"""Network definitions, with no face-analysis or training code: the recogniser backbones
(MobileFaceNet, IResNet, EdgeFace, Face Transformer), facexlib's published IR-SE50, the margin heads they train
with (ArcFace, CosFace, AdaFace), and the one input convention of all of them (:func:`to_tensor`). Everything above
(:mod:`idgen.faces`, :mod:`idgen.recognition`, :mod:`idgen.unlearn`) builds on these."""

from .backbones import BACKBONES, build_backbone, save_recognizer
from .edgeface import VARIANTS as EDGEFACE_VARIANTS
from .edgeface import EdgeFace, load_edgeface
from .edgeface_classifier import EdgeFaceClassifier, EdgeFaceClassifierConfig
from .face_transformer import PRESETS, FaceRecognizer, FaceTransformerConfig, model_config
from .heads import HEADS, AdaFaceHead, MarginHead, margin_head
from .inputs import to_tensor
from .iresnet import DEPTHS as IRESNET_DEPTHS
from .iresnet import IResNet, load_insightface_iresnet
from .ir_se50 import IRSE, load_ir_se
from .mobilefacenet import MobileFaceNet

__all__ = ["BACKBONES", "EDGEFACE_VARIANTS", "HEADS", "IRESNET_DEPTHS", "PRESETS", "AdaFaceHead", "EdgeFace",
           "EdgeFaceClassifier", "EdgeFaceClassifierConfig", "FaceRecognizer", "FaceTransformerConfig", "IResNet",
           "IRSE", "MarginHead", "MobileFaceNet", "build_backbone", "load_edgeface", "load_insightface_iresnet",
           "load_ir_se", "margin_head", "model_config", "save_recognizer", "to_tensor"]
