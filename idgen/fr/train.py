"""Old name of the MobileFaceNet trainer, now :mod:`idgen.recognition.trainer` (every backbone)."""

from ..recognition.data import random_flip  # noqa: F401
from ..recognition.trainer import DEFAULT_MARGIN  # noqa: F401
from ..recognition.trainer import RecognizerTrainConfig as TrainConfig  # noqa: F401
from ..recognition.trainer import train as train_recognizer  # noqa: F401
