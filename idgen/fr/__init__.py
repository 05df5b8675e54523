"""Old home of the MobileFaceNet trainer, kept so that old imports work: everything is in
:mod:`idgen.recognition` now (``TrainConfig`` is ``MobileFaceNetTrainConfig``, ``train_recognizer`` is
``train_mobilefacenet``), and ``idgen fr train`` is ``idgen recognizer train --arch mobilefacenet``."""

import warnings

from ..recognition import (LabelledImages, MobileFaceNet, TrainedRecognizer, align_images, is_trained_recognizer,
                           read_face_set)
from ..recognition import MobileFaceNetTrainConfig as TrainConfig
from ..recognition import train_mobilefacenet as train_recognizer

warnings.warn("idgen.fr is now idgen.recognition (TrainConfig → MobileFaceNetTrainConfig, train_recognizer → "
              "train_mobilefacenet)", FutureWarning, stacklevel=2)

__all__ = ["LabelledImages", "MobileFaceNet", "TrainConfig", "TrainedRecognizer", "align_images",
           "is_trained_recognizer", "read_face_set", "train_recognizer"]
