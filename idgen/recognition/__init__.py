"""Face recognisers, every backbone: one data layer (:mod:`.data`: face sets in every format
``idgen dataset generate`` writes, identity folders with a fixed split) and one trainer
(:mod:`.trainer`: :class:`RecognizerTrainConfig` and :func:`train` for MobileFaceNet, IResNet and the
Face Transformer, with one loop, one learning-rate schedule, :func:`warmup_cosine`, and one folder
format; optional distillation, :mod:`.distill`). ``idgen recognizer train --arch …`` runs it.

The old names stay: ``MobileFaceNetTrainConfig`` is :class:`RecognizerTrainConfig`,
``train_mobilefacenet`` is :func:`train`, ``TrainConfig(...)`` is ``RecognizerTrainConfig(backbone=
"face-transformer", ...)`` and ``train_recognizer`` is :func:`fit`."""

from ..faces.trained import TrainedRecognizer, is_trained_recognizer
from ..models import (PRESETS, AdaFaceHead, FaceRecognizer, FaceTransformerConfig, IResNet, MarginHead, MobileFaceNet,
                      model_config)
from .data import (FaceDataConfig, FaceSet, LabelledImages, align_images, load_face_folder, read_face_set,
                   to_model_input)
from .distill import prepare_distillation
from .trainer import (ARCHITECTURES, MobileFaceNetTrainConfig, RecognizerTrainConfig, TrainConfig, embed, fit,
                      predict, train, train_mobilefacenet, train_recognizer, warmup_cosine)

__all__ = [
    "ARCHITECTURES", "PRESETS", "AdaFaceHead", "FaceDataConfig", "FaceRecognizer", "FaceSet", "FaceTransformerConfig",
    "IResNet", "LabelledImages", "MarginHead", "MobileFaceNet", "MobileFaceNetTrainConfig", "RecognizerTrainConfig",
    "TrainConfig", "TrainedRecognizer", "align_images", "embed", "fit", "is_trained_recognizer", "load_face_folder",
    "model_config", "predict", "prepare_distillation", "read_face_set", "to_model_input", "train",
    "train_mobilefacenet", "train_recognizer", "warmup_cosine",
]
