"""Which models the demo and the CLI use, and loading each one only when first needed.

:class:`ModelSettings` names the checkpoints (hub ids or local folders) and comes from command-line
flags or ``IDGEN_*`` environment variables. :class:`ModelHub` turns settings into objects on first
use and keeps them: opening the page loads nothing, the first Generate click loads the Arc2Face face
analyser and pipeline, and the InstantID or InfiniteYou pipeline (each with the face analyser its
model was trained with) is loaded only if someone picks that style.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields
from typing import Optional

#: Setting name → (environment variable, default).
ENVIRONMENT = {
    "model": ("IDGEN_MODEL", None),
    "base": ("IDGEN_BASE", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "arc2face": ("IDGEN_ARC2FACE", "FoivosPar/Arc2Face"),
    "instantid": ("IDGEN_INSTANTID", None),
    "instantid_base": ("IDGEN_INSTANTID_BASE", "stabilityai/stable-diffusion-xl-base-1.0"),
    "infiniteyou": ("IDGEN_INFINITEYOU", None),
    "infiniteyou_base": ("IDGEN_INFINITEYOU_BASE", "black-forest-labs/FLUX.1-dev"),
    "infiniteyou_variant": ("IDGEN_INFINITEYOU_VARIANT", "aes_stage2"),
    "detector": ("IDGEN_DETECTOR", "auto"),  # auto: each model's own (ModelHub.analyzer)
    "recognizer": ("IDGEN_RECOGNIZER", "auto"),
    "insightface_root": ("IDGEN_INSIGHTFACE_ROOT", "~/.insightface"),
    "lcm_lora": ("IDGEN_LCM_LORA", "latent-consistency/lcm-lora-sdv1-5"),
    "lcm_lora_sdxl": ("IDGEN_LCM_LORA_SDXL", "latent-consistency/lcm-lora-sdxl"),
    "device": ("IDGEN_DEVICE", None),
    "dtype": ("IDGEN_DTYPE", None),
    "tiny": ("IDGEN_TINY", "0"),  # any value but empty or 0 turns it on
}

#: What ``--detector auto`` / ``--recognizer auto`` (the default) mean for the analysis commands
#: (embed, eval): dlib, which runs offline with nothing to download. For generation ``auto`` is the
#: face analysis each model was trained with (:meth:`ModelHub.analyzer`).
ANALYSIS_FACE_BACKENDS = ("dlib", "dlib")


def environment_default(name: str) -> str | None:
    """The default of the setting ``name``: its ``IDGEN_*`` variable (:data:`ENVIRONMENT`) when set, else
    the built-in default. Every command and the demo take their defaults from here."""
    variable, default = ENVIRONMENT[name]
    return os.environ.get(variable, default)


def resolve_face_backends(detector: str | None, recognizer: str | None, auto: tuple[str, str]) -> tuple[str, str]:
    """``(detector, recognizer)`` with ``"auto"`` (or ``None``) replaced by the ``auto`` pair's."""
    return (auto[0] if detector in (None, "auto") else detector,
            auto[1] if recognizer in (None, "auto") else recognizer)


#: The generation styles: each is a :class:`ModelHub` method returning its pipeline.
STYLES = ("arc2face", "instantid", "infiniteyou")

#: The flags that choose each model of :class:`ModelHub` (for error messages).
MODEL_FLAGS = {"analyzer": "--detector / --recognizer / --insightface-root (default: each model's own)",
               "arc2face": "--model, or --base and --arc2face", "instantid": "--instantid and --instantid-base",
               "infiniteyou": "--infiniteyou (a download of ByteDance/InfiniteYou) and --infiniteyou-base "
                              "(of black-forest-labs/FLUX.1-dev)"}


@dataclass
class ModelSettings:
    """Checkpoints and devices of the demo; see :data:`ENVIRONMENT` for the variables and defaults.

    ``model`` is a saved idgen Arc2Face pipeline (``save_pretrained`` layout) or ``"mini"`` (the
    embedded model, :mod:`idgen.pipelines.mini`); when set it replaces ``base`` + ``arc2face``. With
    neither set and the default ``base`` + ``arc2face`` not on this machine, the mini model runs
    (:meth:`arc2face_source`), so the demo makes faces offline. ``instantid`` is the InstantID folder or hub id (``InstantX/InstantID``: ``ControlNetModel/``
    and ``ip-adapter.bin``); leave it unset to hide the InstantID style. ``infiniteyou`` is the
    InfiniteYou folder or hub id (``ByteDance/InfiniteYou``: ``infu_flux_v1.0/<infiniteyou_variant>/``
    with ``InfuseNetModel/`` and ``image_proj_model.bin``) on the FLUX.1-dev ``infiniteyou_base``;
    unset, the InfiniteYou style is hidden. ``tiny`` replaces every
    model by a tiny random one built in code (dlib for faces) so the demo runs offline.

    ``allow_folders`` are the server folders the demo's Forget → Recogniser tab may read (``python
    app.py --allow-folder PATH``, repeatable; none by default): the page offers exactly these, made
    absolute when the settings are made, and never reads a path a client names.

    ``lcm_lora`` / ``lcm_lora_sdxl`` are the LCM-LoRAs of the fast preset for Arc2Face (SD 1.5) and
    InstantID (SDXL). In tiny mode the published ones are dropped (no LoRA distilled from SD fits a
    random model): the preset then only sets its few steps and low guidance, unless a LoRA folder
    is named explicitly.
    """

    model: Optional[str] = None
    base: str = ENVIRONMENT["base"][1]
    arc2face: str = ENVIRONMENT["arc2face"][1]
    instantid: Optional[str] = None
    instantid_base: str = ENVIRONMENT["instantid_base"][1]
    infiniteyou: Optional[str] = None
    infiniteyou_base: str = ENVIRONMENT["infiniteyou_base"][1]
    infiniteyou_variant: str = ENVIRONMENT["infiniteyou_variant"][1]
    lcm_lora: Optional[str] = ENVIRONMENT["lcm_lora"][1]
    lcm_lora_sdxl: Optional[str] = ENVIRONMENT["lcm_lora_sdxl"][1]
    detector: str = ENVIRONMENT["detector"][1]
    recognizer: str = ENVIRONMENT["recognizer"][1]
    insightface_root: str = ENVIRONMENT["insightface_root"][1]
    det_size: int = 640
    upsample: int = 0
    allow_folders: tuple[str, ...] = ()
    device: Optional[str] = None
    dtype: Optional[str] = None
    tiny: bool = False
    #: Use the embedded mini model when the default Arc2Face checkpoints are not on this machine.
    #: :meth:`from_environment` turns it off when ``--base``/``--arc2face`` (or their variables) name one.
    mini_fallback: bool = True

    def __post_init__(self):
        self.allow_folders = tuple(_allowed_folder(path) for path in self.allow_folders)
        if self.tiny:  # the published LCM-LoRAs do not fit random weights; only a named folder is used
            for name in ("lcm_lora", "lcm_lora_sdxl"):
                if getattr(self, name) == ENVIRONMENT[name][1]:
                    setattr(self, name, None)

    @classmethod
    def from_environment(cls, **overrides) -> "ModelSettings":
        """Defaults, then ``IDGEN_*`` variables, then ``overrides`` that are not ``None``."""
        values = {name: environment_default(name) for name in ENVIRONMENT}
        values["tiny"] = values["tiny"] not in ("", "0")
        values.update({k: v for k, v in overrides.items() if v is not None})
        named = any(name in overrides and overrides[name] is not None or ENVIRONMENT[name][0] in os.environ
                    for name in ("base", "arc2face"))
        values.setdefault("mini_fallback", not named)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def arc2face_source(self) -> str:
        """Which identity-only generator runs: ``"tiny"``, ``"mini"`` (the embedded model:
        ``--model mini``, or the default checkpoints are not on this machine), ``"model"`` (a saved
        pipeline folder) or ``"arc2face"`` (``base`` + ``arc2face``)."""
        if self.tiny:
            return "tiny"
        if self.model == "mini":
            return "mini"
        if self.model:
            return "model"
        defaults = (self.base, self.arc2face) == (ENVIRONMENT["base"][1], ENVIRONMENT["arc2face"][1])
        if defaults and self.mini_fallback and not published_arc2face_present(self.base, self.arc2face):
            return "mini"
        return "arc2face"

    def describe(self) -> str:
        """One line saying which generator runs, for the page and the CLI."""
        source = self.arc2face_source()
        if source == "tiny":
            return "tiny random models (noise, not faces)"
        if source == "mini":
            reason = "" if self.model == "mini" else f" ({self.arc2face} is not downloaded on this machine)"
            return f"the embedded mini model: 64×64 faces, trained on LFW, offline{reason}"
        if source == "model":
            return f"the Arc2Face pipeline in {self.model}"
        return f"Arc2Face {self.arc2face} on {self.base}"

    def fast_preset_unavailable(self, style: str) -> Optional[str]:
        """``None`` when the fast preset (LCM-LoRA) can run for ``style`` on this machine, else one line
        saying why and what to download, from where, with which flag. Looked up on disk only.

        Without an LCM-LoRA setting (tiny mode) the preset only sets its steps and guidance, which
        always runs. The published SD 1.5 LCM-LoRA does not fit the embedded mini model's UNet."""
        if style == "infiniteyou":
            return ("the fast preset (LCM-LoRA) is for Arc2Face and InstantID; InfiniteYou has none: "
                    "untick it, or lower the steps instead")
        name, flag = ("lcm_lora", "--lcm-lora") if style == "arc2face" else ("lcm_lora_sdxl", "--lcm-lora-sdxl")
        lora = getattr(self, name)
        if lora is None:
            return None
        published = lora == ENVIRONMENT[name][1]
        if style == "arc2face" and published and self.arc2face_source() == "mini":
            return (f"the fast preset's LCM-LoRA ({lora}) is distilled from SD 1.5 and does not fit the embedded "
                    f"mini model that runs here: it needs the published Arc2Face ({self.arc2face} on {self.base}, "
                    f"downloaded; {MODEL_FLAGS['arc2face']})")
        if lora_present(lora):
            return None
        if published:
            return (f"the fast preset needs the LCM-LoRA {lora}, which is not on this machine: download it with "
                    f"`hf download {lora}` (or name a downloaded copy with {flag} FOLDER)")
        return f"{flag} {lora}: no LoRA weights (.safetensors) there; name a LoRA folder or file, or a downloaded hub id"

    def resolved_device(self) -> str:
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def resolved_dtype(self):
        import torch

        if self.dtype:
            return getattr(torch, self.dtype)
        return torch.float16 if self.resolved_device().startswith("cuda") else None

    def flux_dtype(self):
        """FLUX's weights dtype: ``dtype`` when set, else bfloat16 on GPU (FLUX.1-dev overflows in
        float16) and float32 on CPU."""
        import torch

        if self.dtype:
            return getattr(torch, self.dtype)
        return torch.bfloat16 if self.resolved_device().startswith("cuda") else torch.float32


def dataset_generator(settings: ModelSettings) -> tuple[dict, str]:
    """The ``generator`` settings of a dataset whose config names no ``generator.type``, and one line
    saying which model that is and why: the one :meth:`ModelSettings.arc2face_source` picks (the
    published Arc2Face when its weights are on this machine, a saved pipeline that ``model`` names,
    else the embedded mini model, offline)."""
    source = settings.arc2face_source()
    if source == "model" and settings.model != "mini":
        spec = {"type": "arc2face", "path": settings.model}
    elif source == "arc2face":
        spec = {"type": "arc2face", "path": settings.arc2face, "base": settings.base}
    else:
        spec = {"type": "mini"}
    why = " (its weights are on this machine)" if source == "arc2face" and settings.mini_fallback else ""
    return spec, f"{settings.describe()}{why}"


def _allowed_folder(path: str) -> str:
    """``path`` made absolute, or a ConfigError when it is not a folder (checked when the server starts)."""
    from ..errors import ConfigError

    folder = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(folder):
        raise ConfigError(f"--allow-folder {path}: not a folder; give a folder with one sub-folder of photos per person")
    return folder


def local_file(repo: str, filename: str) -> Optional[str]:
    """The path of ``filename`` in the local folder ``repo``, or in the hub cache of the hub id ``repo``
    (its ``main`` snapshot); ``None`` when it is not on this machine. Looked up on disk only: deciding
    what can run never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    if os.path.isdir(repo):
        path = os.path.join(repo, filename)
        return path if os.path.isfile(path) else None
    try:
        path = try_to_load_from_cache(repo, filename)
    except ValueError:   # neither a folder nor a valid hub id (a missing path, say): not here
        return None
    return path if isinstance(path, str) else None


def published_arc2face_present(base: str, arc2face: str) -> bool:
    """Whether the SD 1.5 base and the Arc2Face checkpoint are local folders or already in the hub cache."""
    return local_file(base, "model_index.json") is not None and local_file(arc2face, "arc2face/config.json") is not None


def lora_present(lora: str) -> bool:
    """Whether the LoRA ``lora`` is on this machine: a ``.safetensors`` file, a folder holding one, or a
    hub id whose ``pytorch_lora_weights.safetensors`` (the diffusers layout) is in the hub cache."""
    from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE

    if os.path.isfile(lora):
        return lora.endswith(".safetensors")
    if os.path.isdir(lora):
        return any(name.endswith(".safetensors") for name in os.listdir(lora))
    return local_file(lora, LORA_WEIGHT_NAME_SAFE) is not None


class ModelHub:
    """Lazily built, shared models for the demo's tabs (thread-safe: the queue runs handlers in
    worker threads, and two first clicks must not load a checkpoint twice).

    Its pipelines have their own denoising progress bar turned off: the actions report each step
    through their ``progress`` callback, so a job shows one bar."""

    def __init__(self, settings: Optional[ModelSettings] = None):
        self.settings = settings or ModelSettings.from_environment()
        self._cache: dict = {}
        self._lock = threading.RLock()  # arc2face() builds analyzer() inside the lock
        self._in_use: dict[str, threading.Lock] = {}

    @property
    def instantid_available(self) -> bool:
        return self.settings.tiny or self.settings.instantid is not None

    @property
    def infiniteyou_available(self) -> bool:
        return self.settings.tiny or self.settings.infiniteyou is not None

    def exclusive(self, name: str) -> threading.Lock:
        """Hold this while using model ``name`` (``"arc2face"``, ``"instantid"``, ``"infiniteyou"``): a
        diffusers pipeline keeps per-call state (its scheduler's step index), so two requests must
        never run one pipeline at once. With ``--concurrency`` above 1 a second request waits here while other work
        (face analysis, another model) goes on."""
        with self._lock:
            return self._in_use.setdefault(name, threading.Lock())

    def loaded(self) -> list[str]:
        """Names of the models built so far (the tests check that tabs load only what they need)."""
        return sorted(self._cache)

    def _get(self, name: str, build):
        """``build()`` once. A checkpoint that cannot be found or read (offline, wrong folder) becomes
        a one-line :class:`~idgen.errors.ModelFilesMissingError` naming the flags that choose it."""
        from ..errors import IdgenError, ModelFilesMissingError

        with self._lock:
            if name not in self._cache:
                try:
                    self._cache[name] = build()
                except IdgenError:
                    raise
                except (OSError, ValueError) as error:  # what from_pretrained raises for a bad id or folder
                    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    raise ModelFilesMissingError(f"cannot load the {name} model: {reason} (choose it with "
                                                 f"{MODEL_FLAGS[name.split(':')[0]]}, or run with --tiny)") from error
            return self._cache[name]

    def face_backends(self, style: str) -> tuple[str, str]:
        """``(detector, recognizer)`` that photos for ``style`` are analysed with: the face analysis its
        model was trained with (:data:`idgen.faces.published.FACE_BACKENDS`), except where ``--detector`` /
        ``--recognizer`` are set (the pipeline then warns, naming the recogniser it was trained on)."""
        from ..faces.published import FACE_BACKENDS

        return resolve_face_backends(self.settings.detector, self.settings.recognizer, FACE_BACKENDS[style])

    def analyzer(self, style: str = "arc2face"):
        """The face analyser of the ``style`` model (one of :data:`STYLES`): dlib in tiny mode (the random
        models are built for its 128-d embeddings), the embedded mini model's own analysis when it is the
        Arc2Face model that runs, else :meth:`face_backends`."""
        from ..faces import FaceAnalyzer

        s = self.settings
        if s.tiny:
            return self._get("analyzer", lambda: FaceAnalyzer.from_backend("dlib", "dlib"))
        name = "analyzer" if style == "arc2face" else f"analyzer:{style}"
        if style == "arc2face" and s.arc2face_source() == "mini" and (s.detector, s.recognizer) == ("auto", "auto"):
            from ..pipelines.mini import mini_face_analyzer   # the analysis the mini model was trained with

            return self._get(name, lambda: mini_face_analyzer(upsample=s.upsample))
        detector, recognizer = self.face_backends(style)
        return self._get(name, lambda: FaceAnalyzer.from_backend(
            detector, recognizer, root=s.insightface_root, det_size=s.det_size, upsample=s.upsample))

    def arc2face(self):
        """The Arc2Face pipeline, with its face analyser attached."""
        def build():
            s = self.settings
            source = s.arc2face_source()
            if source == "tiny":
                from ..testing import tiny_arc2face

                pipe = tiny_arc2face()
            elif source == "mini":
                from ..pipelines.mini import load_mini_pipeline

                pipe = load_mini_pipeline(s.resolved_device(), s.resolved_dtype())
            else:
                from ..pipelines import Arc2FacePipeline

                if s.model:
                    pipe = Arc2FacePipeline.from_pretrained(s.model, dtype=s.resolved_dtype())
                else:
                    pipe = Arc2FacePipeline.from_arc2face(s.base, s.arc2face, dtype=s.resolved_dtype())
                pipe.to(self.settings.resolved_device())
            pipe.set_face_analyzer(self.analyzer())
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._get("arc2face", build)

    def instantid(self):
        """The InstantID pipeline (SDXL + IdentityNet + face adapter), with its face analyser."""
        from ..errors import ConfigError

        if not self.instantid_available:
            raise ConfigError("InstantID is not configured: start the demo with --instantid FOLDER_OR_HUB_ID")

        def build():
            from diffusers import ControlNetModel

            from ..pipelines import InstantIDPipeline

            s = self.settings
            if s.tiny:
                from ..testing import TEXT_WIDTH, tiny_instantid

                pipe = tiny_instantid(embedding_dim=TEXT_WIDTH)   # dlib's 128-d embeddings in tiny mode
            else:
                controlnet = ControlNetModel.from_pretrained(s.instantid, subfolder="ControlNetModel",
                                                             dtype=s.resolved_dtype())
                pipe = InstantIDPipeline.from_pretrained(s.instantid_base, controlnet=controlnet,
                                                         dtype=s.resolved_dtype())
                pipe.load_instantid_adapter(s.instantid)
                pipe.to(s.resolved_device())
            pipe.set_face_analyzer(self.analyzer("instantid"))
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._get("instantid", build)

    def infiniteyou(self):
        """The InfiniteYou pipeline (FLUX.1-dev + InfuseNet + identity projection), with its face analyser."""
        from ..errors import ConfigError

        if not self.infiniteyou_available:
            raise ConfigError("InfiniteYou is not configured: download ByteDance/InfiniteYou and "
                              "black-forest-labs/FLUX.1-dev, then pass --infiniteyou FOLDER_OR_HUB_ID (or set "
                              "$IDGEN_INFINITEYOU; --infiniteyou-base / $IDGEN_INFINITEYOU_BASE names the FLUX.1-dev copy)")

        def build():
            s = self.settings
            if s.tiny:
                from ..testing.tiny_infiniteyou import tiny_infiniteyou

                # the projection takes the tiny analyser's (dlib's) embeddings
                pipe = tiny_infiniteyou(embedding_dim=self.analyzer("infiniteyou").recognizer.embedding_size)
            else:
                from ..pipelines import load_infiniteyou_pipeline

                pipe = load_infiniteyou_pipeline(s.infiniteyou_base, s.infiniteyou, variant=s.infiniteyou_variant,
                                                 dtype=s.flux_dtype())
                pipe.to(s.resolved_device())
            pipe.set_face_analyzer(self.analyzer("infiniteyou"))
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._get("infiniteyou", build)


def settings_from_args(args) -> ModelSettings:
    return ModelSettings.from_environment(**{name: getattr(args, name, None) for name in ENVIRONMENT},
                                          det_size=args.det_size, upsample=args.upsample,
                                          allow_folders=tuple(getattr(args, "allow_folder", None) or ()))
