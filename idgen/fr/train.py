"""Old name of the MobileFaceNet trainer, now :mod:`idgen.recognition.mobilefacenet`."""

from ..recognition.data import random_flip  # noqa: F401
from ..recognition.mobilefacenet import DEFAULT_MARGIN  # noqa: F401
from ..recognition.mobilefacenet import MobileFaceNetTrainConfig as TrainConfig  # noqa: F401
from ..recognition.mobilefacenet import train_mobilefacenet as train_recognizer  # noqa: F401
