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


from ..config import MODEL, MODEL_SPEC, PATH, build_dataclass, load_settings, path_field
from ..errors import ConfigError


@dataclass
class IdentityConfig:
    count: int = 100
    dim: int = 512
    max_cosine: float = 0.3          # target for every pair of identity vectors
    prior: Optional[str] = path_field(None)   # .safetensors of real embeddings (e.g. from ``idgen embed``)
    steps: int = 500
    neighbors: int = 16


@dataclass
class VariationConfig:
    images_per_identity: int = 4
    min_cosine: float = 1.0          # perturb each image's identity vector to cosine ≥ this (1 = off)
    prompts: list = field(default_factory=list)   # passed per image as ``prompt`` when non-empty
    poses: Any = path_field(None, MODEL)   # pose bank, passed per image as ``pose``: "default", a photo folder, a file (idgen.synth.poses)


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
    det_size: int = 640
    fallback_box: Optional[float] = None
    threshold: Optional[float] = None  # keep an image when similarity to the reference ≥ this; null: the generator's default (FILTER_THRESHOLDS)
    reference: str = "auto"          # "target", "centroid", or "auto" (target when dims match)
    duplicate_cosine: Optional[float] = None  # reject near-duplicates of kept images (e.g. 0.95)
    max_retries: int = 3             # regenerate a rejected image at most this many times


@dataclass
class OutputConfig:
    formats: list = field(default_factory=lambda: ["imagefolder", "parquet", "webdataset"])
    shard_size: int = 1000           # images per parquet / WebDataset shard
    jpeg_quality: int = 95


@dataclass
class RuntimeConfig:
    batch_size: int = 16             # images per generator call (across identities)
    queue_size: int = 2              # generated batches waiting for analysis
    progress: bool = True
    device: Optional[str] = None     # default: the accelerate process's device


@dataclass
class SynthConfig:
    output: str = path_field("synthetic-faces")
    seed: int = 0
    #: the generator factory's settings: ``type`` (a built-in generator, or one an installed package
    #: registers in the ``idgen.generators`` entry-point group; never a module to import) and that
    #: generator's own keys (``photos``: a folder, ``path`` and ``base``: hub ids or folders, …; see
    #: ``idgen.synth.generators.build_generator``)
    generator: dict = path_field(default_factory=lambda: {"type": "photo"},
                                 rule={"photos": PATH, "path": MODEL, "base": MODEL})
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
        try:
            return build_dataclass(cls, data or {})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> "SynthConfig":
        """Read a YAML file (optional) and apply ``section.key=value`` overrides (YAML values);
        relative paths in the file are relative to it, in overrides to the current directory."""
        data = load_settings(cls, path, overrides or [])
        return cls.from_dict(data, str(path) if path else "overrides")
