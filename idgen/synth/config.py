"""The configuration of one synthetic-dataset run: a YAML file plus ``key=value`` overrides.
Relative paths in the file are relative to the file, those in overrides to the current directory
(the keys marked with :func:`~idgen.config.path_field`; see :mod:`idgen.config`).

Everything that changes the images is in the config and is recorded with the dataset; the
``runtime`` section (batch size, queue depth, progress bars) only changes speed, so a run may be
resumed with different runtime settings or a different number of processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional


from ..config import (BOX, COSINE, DENOISING_STEPS, DET_SIZE, DIFFUSION_BATCH, EMBEDDING_DIM, FRACTION, IMAGE_SIDE,
                      MODEL, MODEL_SPEC, PATH, SEED, Range, build_dataclass, config_source, load_settings, path_field,
                      ranged)


@dataclass
class IdentityConfig:
    """The identity vectors (:func:`idgen.synth.identities.sample_identities`). All ``count`` of them
    are held in memory at once (4 GB at the caps, 1M × 1024-d float32), and every scan of the pairs
    costs count² × dim operations."""

    count: int = ranged(100, Range(2, 1_000_000))     # how many identities (at least 2: they are pushed apart)
    dim: int = ranged(512, EMBEDDING_DIM)            # length of each vector: the recogniser's embedding size
    max_cosine: float = ranged(0.3, COSINE)          # target for every pair of identity vectors
    prior: Optional[str] = path_field(None)   # .safetensors of real embeddings (e.g. from ``idgen embed``)
    steps: int = ranged(500, Range(0))               # repulsion steps (0: the random draw as it is)
    neighbors: int = ranged(16, Range(1, 256))       # close partners kept per vector between scans (count × this pairs in memory)


@dataclass
class VariationConfig:
    #: at most 1000: an identity's images are queued together and their embeddings kept until it is finished
    images_per_identity: int = ranged(4, Range(1, 1000))
    min_cosine: float = ranged(1.0, COSINE)          # perturb each image's identity vector to cosine ≥ this (1 = off)
    prompts: list = field(default_factory=list)   # passed per image as ``prompt`` when non-empty
    poses: Any = path_field(None, MODEL)   # pose bank, passed per image as ``pose``: "default", a photo folder, a file (idgen.synth.poses)
    #: expression bank, passed per image as ``expression`` (Arc2Face's Expression Adapter: set
    #: ``generator.expression_adapter``): a .npy or .json file of FLAME parameter vectors (K × 55), or a list of them
    expressions: Any = path_field(None)


#: The filter threshold a config gets when it leaves ``filter.threshold`` unset, per ``generator.type``.
#: Similarities depend on the generator and the recogniser, so one number cannot fit all: 0.5 suits
#: ArcFace-style recognisers on full-size renders, while the embedded mini model's 64×64 renders
#: reach a MobileFaceNet cosine of only ~0.11 to their identity on average. The mini value is the
#: 99th percentile of impostor similarities (a render against another identity's vector, 0.208)
#: measured by ``benchmarks/filter_threshold.py --identities 40 --steps 10``, rounded up: about 1 %
#: of wrong-identity renders pass (see the synthetic-datasets guide for the numbers).
FILTER_THRESHOLDS = {"mini": 0.21}
#: The threshold of every other generator.
DEFAULT_FILTER_THRESHOLD = 0.5


def default_filter_threshold(generator_type: Optional[str]) -> float:
    """The calibrated filter threshold of a generator type (:data:`FILTER_THRESHOLDS`), else 0.5."""
    return FILTER_THRESHOLDS.get(generator_type, DEFAULT_FILTER_THRESHOLD)


@dataclass
class FilterConfig:
    enabled: bool = True
    detector: str = path_field("dlib", MODEL)
    recognizer: Optional[str] = path_field("dlib", MODEL_SPEC)
    det_size: int = ranged(640, DET_SIZE)    # insightface detector input side
    fallback_box: Optional[float] = ranged(None, BOX)  # where no face is detected, a centred box of this fraction of the image
    threshold: Optional[float] = ranged(None, COSINE)  # keep an image when similarity to the reference ≥ this; null: the generator's default (FILTER_THRESHOLDS)
    reference: str = "auto"          # "target", "centroid", or "auto" (target when dims match)
    duplicate_cosine: Optional[float] = ranged(None, COSINE)  # reject near-duplicates of kept images (e.g. 0.95)
    max_retries: int = ranged(3, Range(0, 100))    # regenerate a rejected image at most this many times


@dataclass
class OutputConfig:
    formats: list = field(default_factory=lambda: ["imagefolder", "parquet", "webdataset"])
    #: images per parquet / WebDataset shard; at most 100,000: a shard is assembled in memory
    shard_size: int = ranged(1000, Range(1, 100_000))
    jpeg_quality: int = ranged(95, Range(1, 100))   # PIL's JPEG quality (above 95 mostly grows the files)


@dataclass
class RuntimeConfig:
    batch_size: int = ranged(16, DIFFUSION_BATCH)    # images per generator call (across identities)
    queue_size: int = ranged(2, Range(1, 64))        # generated batches waiting for analysis (each held in memory)
    progress: bool = True
    device: Optional[str] = None     # default: the accelerate process's device


#: The numeric keys of the ``generator`` mapping, checked whatever the generator type: ``height`` and
#: ``width`` of the diffusion generators' renders, ``size`` of the photo generator's, the sampler's
#: steps and guidance, the photo generator's ``failure_rate`` and ``key_seed``, the tiny models'
#: ``embedding_dim`` and ``seed``, the Arc2Face Expression Adapter's ``expression_scale``.
GENERATOR_RANGES = {
    "height": (int, IMAGE_SIDE), "width": (int, IMAGE_SIDE), "size": (int, Range(8, 4096)),
    "num_inference_steps": (int, DENOISING_STEPS), "guidance_scale": (float, Range(0)),
    "failure_rate": (float, FRACTION), "key_seed": (int, SEED), "embedding_dim": (int, EMBEDDING_DIM),
    "seed": (int, SEED), "expression_scale": (float, Range(0.0, 2.0)),
}


@dataclass
class SynthConfig:
    output: str = path_field("synthetic-faces")
    seed: int = ranged(0, SEED)
    #: the generator factory's settings: ``type`` (a built-in generator, or one an installed package
    #: registers in the ``idgen.generators`` entry-point group; never a module to import) and that
    #: generator's own keys (``photos``: a folder, ``path`` and ``base``: hub ids or folders, …; see
    #: ``idgen.synth.generators.build_generator``)
    generator: dict = path_field(default_factory=lambda: {"type": "photo"},
                                 rule={"photos": PATH, "path": MODEL, "base": MODEL, "expression_adapter": MODEL},
                                 ranges=GENERATOR_RANGES)
    identities: IdentityConfig = field(default_factory=IdentityConfig)
    variation: VariationConfig = field(default_factory=VariationConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    writers: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self):
        # resolved here, not when filtering, so config.json and the fingerprint record the number used
        if self.filter.threshold is None:
            self.filter.threshold = default_filter_threshold(self.generator.get("type"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that decides the dataset (not where it goes, nor the runtime section)."""
        content = self.to_dict()
        content.pop("runtime")
        content.pop("output")
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "SynthConfig":
        """The config of the settings ``data``; an error names ``source`` (where they came from)."""
        with config_source(source):
            return build_dataclass(cls, data or {})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> "SynthConfig":
        """Read a YAML file (optional) and apply ``section.key=value`` overrides (YAML values);
        relative paths in the file are relative to it, in overrides to the current directory. An
        error names the override or the file the bad value came from."""
        data = load_settings(cls, path, overrides or [])
        with config_source(path, overrides or []):
            return build_dataclass(cls, data)
