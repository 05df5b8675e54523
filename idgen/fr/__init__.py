"""Compact face recognisers (MobileFaceNet + ArcFace/CosFace margin heads) trained on idgen face sets."""

from .data import LabelledImages, align_images, read_face_set
from .heads import MarginHead
from .mobilefacenet import MobileFaceNet
from .recognizer import TrainedRecognizer, is_trained_recognizer
from .train import TrainConfig, train_recognizer

__all__ = ["LabelledImages", "MarginHead", "MobileFaceNet", "TrainConfig", "TrainedRecognizer", "align_images",
           "is_trained_recognizer", "read_face_set", "train_recognizer"]
