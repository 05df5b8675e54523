"""Face recognisers, every architecture: one data layer (:mod:`.data`: face sets in every format
``idgen dataset generate`` writes, identity folders with a fixed split) and one trainer
(:mod:`.trainer`: :func:`train` and one config per architecture, :class:`MobileFaceNetRecipe`,
:class:`IResNetRecipe` and :class:`FaceTransformerRecipe` on the shared :class:`RecognizerTrainConfig`,
with one loop, one learning-rate schedule, :func:`warmup_cosine`, and one folder format; optional
distillation, :mod:`.distill`). ``idgen recognizer train --architecture …`` runs it."""

from ..faces.trained import TrainedRecognizer, is_trained_recognizer
from ..models import (PRESETS, AdaFaceHead, FaceRecognizer, FaceTransformerConfig, IResNet, MarginHead, MobileFaceNet,
                      model_config)
from .data import (FaceDataConfig, FaceSet, LabelledImages, align_images, load_face_folder, read_face_set,
                   to_model_input)
from .distill import prepare_distillation
from .trainer import (ARCHITECTURES, RECIPES, FaceTransformerRecipe, IResNetRecipe, MobileFaceNetRecipe,
                      RecognizerTrainConfig, embed, fit, predict, train, warmup_cosine)

__all__ = [
    "ARCHITECTURES", "PRESETS", "RECIPES", "AdaFaceHead", "FaceDataConfig", "FaceRecognizer", "FaceSet",
    "FaceTransformerConfig", "FaceTransformerRecipe", "IResNet", "IResNetRecipe", "LabelledImages", "MarginHead",
    "MobileFaceNet", "MobileFaceNetRecipe", "RecognizerTrainConfig", "TrainedRecognizer", "align_images", "embed", "fit",
    "is_trained_recognizer", "load_face_folder", "model_config", "predict", "prepare_distillation", "read_face_set",
    "to_model_input", "train", "warmup_cosine",
]
