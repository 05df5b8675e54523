"""Synthetic face-recognition datasets: distinct sampled identities × varied, filtered images.

>>> from idgen.synth import generate_dataset
>>> stats = generate_dataset("configs/synth.yaml")      # or a SynthConfig / dict

Or from the shell, on any number of processes / GPUs / machines::

    idgen dataset generate --config synth.yaml identities.count=10000
    accelerate launch -m idgen.cli dataset generate --config synth.yaml
"""

from .config import SynthConfig
from .consistency import ConsistencyFilter
from .dataset import generate_dataset
from .generators import (Arc2FaceGenerator, ImageGenerator, InfiniteYouGenerator, InstantIDGenerator,
                         PhotoJitterGenerator, build_generator)
from .identities import GaussianPrior, perturb_within_cosine, scan_pairs, sample_identities, similarity_stats
from .poses import PoseBank

__all__ = [
    "Arc2FaceGenerator", "ConsistencyFilter", "GaussianPrior", "ImageGenerator", "InfiniteYouGenerator",
    "InstantIDGenerator", "PhotoJitterGenerator", "PoseBank", "SynthConfig", "build_generator", "generate_dataset",
    "perturb_within_cosine", "sample_identities", "scan_pairs", "similarity_stats",
]
