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
from dataclasses import dataclass, field
from typing import Any, Optional


from ..config import (BOX, COSINE, DENOISING_STEPS, DET_SIZE, DIFFUSION_BATCH, EMBEDDING_DIM, FRACTION, IMAGE_SIDE,
                      MODEL, MODEL_SPEC, PATH, SEED, Range, YamlConfig, path_field, ranged)


@dataclass
class IdentityConfig:
    """The identity vectors (:func:`idgen.synth.identities.sample_identities`). All ``count`` of them
    are held in memory at once (4 GB at the caps, 1M × 1024-d float32), and every scan of the pairs
    costs count² × dim operations."""

    count: int = ranged(100, Range(2, 1_000_000))     # how many identities (at least 2: they are pushed apart)
    dim: Optional[int] = ranged(None, EMBEDDING_DIM)  # length of each vector: the recogniser's embedding size; null: the generator's default (GENERATOR_DEFAULTS)
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


#: The keys a config may leave unset (null) and the value each then gets, per ``generator.type``:
#: a generator is conditioned on one recogniser's embeddings, so the identity vectors' length and
#: the filter's recogniser follow it, and similarities depend on the generator and the recogniser, so
#: the filter threshold does too. The embedded mini model is conditioned on 128-d MobileFaceNet
#: embeddings (:data:`idgen.pipelines.mini.MINI_FACE_BACKENDS`), and its 64×64 renders reach a
#: MobileFaceNet cosine of only ~0.11 to their identity on average: its threshold is the 99th
#: percentile of impostor similarities (a render against another identity's vector, 0.208) measured
#: by ``benchmarks/filter_threshold.py --identities 40 --steps 10``, rounded up, so about 1 % of
#: wrong-identity renders pass (see the synthetic-datasets guide for the numbers).
GENERATOR_DEFAULTS = {
    "mini": {"identities.dim": 128, "filter.recognizer": "mobilefacenet", "filter.threshold": 0.21},
}
#: What those keys get with every other generator: 512-d vectors (ArcFace-style recognisers), dlib
#: (offline, nothing to download) and 0.5, which suits ArcFace-style recognisers on full-size renders.
COMMON_DEFAULTS = {"identities.dim": 512, "filter.recognizer": "dlib", "filter.threshold": 0.5}


def generator_defaults(generator_type: Optional[str]) -> dict:
    """The values of the keys in :data:`COMMON_DEFAULTS` for ``generator_type`` (dotted key → value)."""
    return {**COMMON_DEFAULTS, **GENERATOR_DEFAULTS.get(generator_type, {})}


@dataclass
class FilterConfig:
    enabled: bool = True
    detector: str = path_field("dlib", MODEL)
    recognizer: Optional[str] = path_field(None, MODEL_SPEC)  # as --recognizer (e.g. dlib, mobilefacenet, arcface.onnx); null: the generator's default (GENERATOR_DEFAULTS)
    det_size: int = ranged(640, DET_SIZE)    # insightface detector input side
    fallback_box: Optional[float] = ranged(None, BOX)  # where no face is detected, a centred box of this fraction of the image
    threshold: Optional[float] = ranged(None, COSINE)  # keep an image when similarity to the reference ≥ this; null: the generator's default (GENERATOR_DEFAULTS)
    reference: str = "auto"          # "target", "centroid", or "auto" (target when dims match)
    duplicate_cosine: Optional[float] = ranged(None, COSINE)  # reject near-duplicates of kept images (e.g. 0.95)
    #: reject an image whose face is turned further than this many degrees left or right (its
    #: ``Face.pose`` yaw, from the detector's landmarks; e.g. 45 keeps near-frontal to half-profile faces); null: any pose
    max_abs_yaw: Optional[float] = ranged(None, Range(0, 90))
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
class SynthConfig(YamlConfig):
    output_dir: str = path_field("synthetic-faces")
    seed: int = ranged(0, SEED)
    #: the generator factory's settings: ``type`` (a built-in generator, or one an installed package
    #: registers in the ``idgen.generators`` entry-point group; never a module to import) and that
    #: generator's own keys (``photos``: a folder, ``path`` and ``base``: hub ids or folders, …; see
    #: ``idgen.synth.generators.build_generator``). Default: the embedded mini model, which runs
    #: offline; ``idgen dataset generate`` with no ``generator.type`` takes the published Arc2Face
    #: instead when its weights are on the machine (``idgen doctor`` says which are)
    generator: dict = path_field(default_factory=lambda: {"type": "mini"},
                                 rule={"photos": PATH, "path": MODEL, "base": MODEL, "expression_adapter": MODEL},
                                 ranges=GENERATOR_RANGES)
    identities: IdentityConfig = field(default_factory=IdentityConfig)
    variation: VariationConfig = field(default_factory=VariationConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    writers: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self):
        # resolved here, not when generating, so config.json and the fingerprint record the values used
        for key, value in generator_defaults(self.generator.get("type")).items():
            section, name = key.split(".")
            if getattr(getattr(self, section), name) is None:
                setattr(getattr(self, section), name, value)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that decides the dataset (not where it goes, nor the runtime section)."""
        content = self.to_dict()
        content.pop("runtime")
        content.pop("output_dir")
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
