"""Compact face recognisers (MobileFaceNet + the ArcFace/CosFace head of :mod:`idgen.recognition`)
trained on idgen face sets."""

from ..faces.trained import TrainedRecognizer, is_trained_recognizer
from ..models import MobileFaceNet
from .data import LabelledImages, align_images, read_face_set
from .train import TrainConfig, train_recognizer

__all__ = ["LabelledImages", "MobileFaceNet", "TrainConfig", "TrainedRecognizer", "align_images",
           "is_trained_recognizer", "read_face_set", "train_recognizer"]
