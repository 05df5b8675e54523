"""Face recognisers, every backbone: one data layer (:mod:`.data`: face sets in every format
``idgen dataset generate`` writes, identity folders with a fixed split), the embedding-backbone
trainer (:mod:`.mobilefacenet`, accelerate: MobileFaceNet or IResNet with an ArcFace, CosFace or
AdaFace head) and the Face Transformer trainer (:mod:`.train`, with optional distillation,
:mod:`.distill`), which share one learning-rate schedule (:func:`.train.warmup_cosine`) and one input
convention (:func:`idgen.models.to_tensor`). ``idgen recognizer train --arch …`` runs them."""

from ..faces.trained import TrainedRecognizer, is_trained_recognizer
from ..models import (PRESETS, AdaFaceHead, FaceRecognizer, FaceTransformerConfig, IResNet, MarginHead, MobileFaceNet,
                      model_config)
from .data import (FaceDataConfig, FaceSet, LabelledImages, align_images, load_face_folder, read_face_set,
                   to_model_input)
from .distill import prepare_distillation
from .mobilefacenet import MobileFaceNetTrainConfig, train_mobilefacenet
from .train import TrainConfig, embed, predict, train_recognizer, warmup_cosine

__all__ = [
    "PRESETS", "AdaFaceHead", "FaceDataConfig", "FaceRecognizer", "FaceSet", "FaceTransformerConfig", "IResNet",
    "LabelledImages", "MarginHead", "MobileFaceNet", "MobileFaceNetTrainConfig", "TrainConfig", "TrainedRecognizer",
    "align_images", "embed", "is_trained_recognizer", "load_face_folder", "model_config", "predict",
    "prepare_distillation", "read_face_set", "to_model_input", "train_mobilefacenet", "train_recognizer",
    "warmup_cosine",
]
