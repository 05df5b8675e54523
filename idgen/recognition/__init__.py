"""Face Transformer recognisers: model, identity-labelled face folders, training (with optional distillation)."""

from .data import FaceDataConfig, FaceSet, load_face_folder, to_model_input
from .distill import prepare_distillation
from ..models import PRESETS, FaceRecognizer, FaceTransformerConfig, MarginHead, model_config
from .train import TrainConfig, embed, predict, train_recognizer

__all__ = [
    "PRESETS", "FaceDataConfig", "FaceRecognizer", "FaceSet", "FaceTransformerConfig", "MarginHead",
    "TrainConfig", "embed", "load_face_folder", "model_config", "predict", "prepare_distillation", "to_model_input",
    "train_recognizer",
]
