"""Old home of the MobileFaceNet trainer, kept so that old imports work: everything is in
:mod:`idgen.recognition` now (``TrainConfig`` is ``RecognizerTrainConfig``, ``train_recognizer`` is
``train``: the one trainer, MobileFaceNet by default), and ``idgen fr train`` is ``idgen recognizer train --arch mobilefacenet``."""

import warnings

from ..recognition import (LabelledImages, MobileFaceNet, TrainedRecognizer, align_images, is_trained_recognizer,
                           read_face_set)
from ..recognition import RecognizerTrainConfig as TrainConfig
from ..recognition import train as train_recognizer

warnings.warn("idgen.fr is now idgen.recognition (TrainConfig → RecognizerTrainConfig, train_recognizer → train)",
              FutureWarning, stacklevel=2)

__all__ = ["LabelledImages", "MobileFaceNet", "TrainConfig", "TrainedRecognizer", "align_images",
           "is_trained_recognizer", "read_face_set", "train_recognizer"]
