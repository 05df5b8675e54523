"""Compact face recognisers (MobileFaceNet + ArcFace/CosFace heads) trained on idgen datasets."""

from .data import FaceSet
from .heads import MarginHead
from .mobilefacenet import MobileFaceNet
from .train import TorchRecognizer, TrainConfig, train_recognizer

__all__ = ["FaceSet", "MarginHead", "MobileFaceNet", "TorchRecognizer", "TrainConfig", "train_recognizer"]
