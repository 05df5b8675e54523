"""Training configuration: one YAML file, typed sections, ``section.key=value`` overrides. Relative
paths in the file are relative to the file, those in overrides to the current directory (the keys
marked with :func:`~idgen.config.path_field`; see :mod:`idgen.config`).

Every key has a default here, so a config file only states what differs. A key this module does not
know is an error that names it (a typo such as ``lerning_rate`` must not silently train with the
default), and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


from ..config import (BOX, DENOISING_STEPS, DET_SIZE, DIFFUSION_BATCH, FRACTION, MODEL, MODEL_SPEC, SEED, UPSAMPLE,
                      Range, YamlConfig, path_field, ranged)
from ..errors import ConfigError

TASKS = ("id-adapter", "personalize", "vae", "id-model")


@dataclass
class ModelConfig:
    #: diffusers folder or hub id of the Stable Diffusion 1.5 base (VAE, tokenizer, scheduler, and the
    #: UNet/text encoder unless ``arc2face`` is set). A folder saved with ``save_pretrained`` works too.
    pretrained: str = path_field("stable-diffusion-v1-5/stable-diffusion-v1-5", MODEL)
    #: Arc2Face checkpoint (hub id or folder with ``arc2face/`` and ``encoder/``); ``null`` trains on
    #: ``pretrained``'s own UNet/text encoder.
    arc2face: Optional[str] = path_field(None, MODEL)
    #: ``arc2face``: condition on identity vectors; ``sd``: plain text prompts (``personalize`` only).
    conditioning: str = "arc2face"
    #: ``vae`` / ``id-model`` from scratch: the constructor arguments of each new network
    #: (``AutoencoderKL``, ``UNet2DConditionModel``, ``CLIPTextConfig``, ``DDPMScheduler``).
    vae_config: dict = field(default_factory=dict)
    unet_config: dict = field(default_factory=dict)
    text_encoder_config: dict = field(default_factory=dict)
    scheduler_config: dict = field(default_factory=dict)
    #: ``id-model``: the trained VAE, kept frozen (the ``vae/`` folder a ``task: vae`` run writes).
    vae: Optional[str] = path_field(None)
    #: ``id-model``: start the UNet and text encoder from this Arc2Face pipeline folder (one that an
    #: earlier ``id-model`` run saved) instead of from scratch.
    init: Optional[str] = path_field(None)
    #: ``id-model`` from scratch: the CLIP tokenizer (hub id or folder), and whether to keep only the
    #: tokens of Arc2Face's prompt plus CLIP's 512 byte tokens (a 500-odd-row embedding table
    #: instead of 49,408 rows; every text still tokenises, the prompt exactly as before).
    tokenizer: str = path_field("openai/clip-vit-large-patch14", MODEL)
    reduced_vocabulary: bool = True


@dataclass
class DataConfig:
    faces_dir: Optional[str] = path_field(None)
    detector: str = path_field("dlib", MODEL)      # "dlib", an insightface pack name or folder
    recognizer: str = path_field("dlib", MODEL_SPEC)
    det_size: int = ranged(640, DET_SIZE)     # insightface detector input side
    upsample: int = ranged(0, UPSAMPLE)       # dlib detector upsampling (1 finds smaller faces)
    #: safetensors file of identity vectors keyed by file hash; default: one per recogniser under
    #: ``$XDG_CACHE_HOME/idgen/identities``.
    identity_cache: Optional[str] = path_field(None)
    #: side of the training crops in pixels (SD 1.5: 512): a multiple of 8; at most 1024 (SDXL's), as
    #: every training image is held in memory at this size once read
    resolution: int = ranged(512, Range(8, 1024, multiple_of=8))
    #: training crops put the five face landmarks on the ArcFace template shrunk by this factor about
    #: the crop centre: 1.0 is the recognisers' tight crop, 0.8 frames the head like FFHQ portraits.
    face_scale: float = ranged(0.8, Range(at_most=2, above=0))
    #: probability of mirroring a training photo (faces are nearly symmetric; the identity is kept).
    flip: float = ranged(0.5, FRACTION)
    #: identity vectors with flip test-time augmentation (the embedding of the mirrored crop added).
    recognizer_flip: bool = False
    #: people to leave out: files in LFW's ``people*.txt`` / ``pairs*.txt`` format (any whitespace-
    #: separated names); a photo is left out when its folder is named after one of them.
    exclude_people: list = path_field(default_factory=list)
    #: ``personalize`` with ``conditioning: sd``: the prompt naming the new identity, and the class.
    instance_prompt: str = "photo of sks person"
    class_prompt: str = "photo of a person"


@dataclass
class GeneratorLoraConfig:
    """The LoRA a ``personalize`` run trains on the generator's UNet (and text encoder) attention
    projections, saved for ``pipe.load_lora_weights`` (:mod:`idgen.training.lora`); not GS-LoRA's
    group-sparse LoRA on a recogniser (:class:`idgen.unlearn.config.GroupSparseLoraConfig`)."""

    rank: int = ranged(16, Range(1, 1024))    # the adapters' inner size (their memory grows with it)
    alpha: Optional[float] = ranged(None, Range(above=0))  # defaults to rank (scale 1)
    dropout: float = ranged(0.0, Range(0, below=1))
    unet_targets: list = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    text_encoder: bool = False
    text_encoder_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])


@dataclass
class OptimConfig:
    batch_size: int = ranged(4, DIFFUSION_BATCH)   # images per step and process
    gradient_accumulation_steps: int = ranged(1, Range(1, 1024))
    max_steps: int = ranged(1000, Range(1))
    learning_rate: float = ranged(1e-4, Range(above=0))
    text_encoder_learning_rate: Optional[float] = ranged(None, Range(above=0))
    learning_rate_scheduler: str = "constant_with_warmup"   # a diffusers.optimization.get_scheduler name
    learning_rate_warmup_steps: int = ranged(0, Range(0))
    weight_decay: float = ranged(1e-2, Range(0))
    betas: list[float] = ranged(default_factory=lambda: [0.9, 0.999], allowed=Range(0, below=1))  # AdamW's two betas
    max_grad_norm: float = ranged(1.0, Range(above=0))   # gradients are clipped to this norm
    #: ``auto``: bitsandbytes' 8-bit AdamW when it is importable and training runs on a GPU;
    #: ``adamw8bit`` forces it (CPU too, bitsandbytes >= 0.50); ``adamw``: torch's.
    optimizer: str = "auto"
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    #: exponential moving average of the trained weights (``vae`` / ``id-model``), e.g. 0.999; the
    #: saved model and validation use the average. ``null``: no EMA.
    ema_decay: Optional[float] = ranged(None, Range(0, below=1))
    #: ``vae``: weight of the KL term next to the L1 reconstruction loss (SD's VAE used about 1e-6).
    kl_weight: float = ranged(1.0e-6, Range(0))
    #: min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is their choice); ``null`` = plain MSE.
    snr_gamma: Optional[float] = ranged(None, Range(above=0))
    noise_offset: float = ranged(0.0, FRACTION)   # offset noise (e.g. 0.05): brighter and darker images
    #: probability of replacing the identity by the empty prompt (classifier-free guidance dropout).
    cfg_dropout: float = ranged(0.1, FRACTION)
    #: ``id-model``: weight λ of the identity loss λ·(1 − cos) between the conditioning recogniser's
    #: embedding of the decoded x̂0 and the example's own identity vector (PuLID / InfiniteYou), added to the
    #: denoising loss; needs ``data.recognizer: mobilefacenet``. 0: off (training as without it).
    id_loss_weight: float = ranged(0.0, Range(0))
    #: the identity loss applies to examples noised to a timestep below this (up to the scheduler's
    #: ``num_train_timesteps``), where x̂0 still shows a face.
    id_loss_max_timestep: int = ranged(600, Range(1, 1000))


@dataclass
class PriorConfig:
    """Prior preservation (DreamBooth): images generated by the frozen model keep it from forgetting
    what other people look like while it learns one."""

    enabled: bool = False
    num_images: int = ranged(50, Range(1, 10_000))   # rendered once, then held in memory with the training images
    weight: float = ranged(1.0, Range(0))
    num_inference_steps: int = ranged(25, DENOISING_STEPS)
    guidance_scale: float = ranged(3.0, Range(0))


@dataclass
class LoggingConfig:
    checkpoint_every: int = ranged(500, Range(1))   # steps between resumable checkpoints
    #: keep at most this many ``checkpoint-N`` folders (oldest removed); ``null`` keeps all.
    checkpoints_total_limit: Optional[int] = ranged(3, Range(1))
    log_every: int = ranged(1, Range(1))


@dataclass
class ValidationConfig:
    #: folder of held-out face photos (one identity per photo); ``null`` disables validation.
    faces_dir: Optional[str] = path_field(None)
    #: only these people's photos (files in the format of ``data.exclude_people``); empty: all.
    people: list = path_field(default_factory=list)
    every: int = ranged(500, Range(1))           # steps between validations
    #: validation photos rendered; all renders are one batch (at most 32 × 8 = 256 images)
    num_identities: int = ranged(4, Range(1, 32))
    images_per_identity: int = ranged(2, Range(1, 8))
    num_inference_steps: int = ranged(25, DENOISING_STEPS)
    guidance_scale: float = ranged(3.0, Range(0))
    #: the independent recogniser that scores renders; ``null`` reuses the data's.
    detector: Optional[str] = path_field(None, MODEL)
    recognizer: Optional[str] = path_field(None, MODEL_SPEC)
    #: renders where no face is detected are scored on a centred box this fraction of the image.
    fallback_box: float = ranged(0.8, BOX)
    #: dlib detector upsampling for the evaluation analyser (1 finds the faces of 64-pixel renders).
    upsample: int = ranged(0, UPSAMPLE)


@dataclass
class TrainConfig(YamlConfig):
    task: str = "id-adapter"
    output_dir: str = path_field("runs/idgen")
    seed: int = ranged(0, SEED)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: GeneratorLoraConfig = field(default_factory=GeneratorLoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self):
        _check_choices(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choices(config: TrainConfig) -> None:
    """The checks that involve names or several keys (the numbers are checked as they are read)."""
    if config.task not in TASKS:
        raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASKS)}", "task")
    if config.model.conditioning not in ("arc2face", "sd"):
        raise ConfigError(f"model.conditioning must be 'arc2face' or 'sd', got {config.model.conditioning!r}",
                          "model.conditioning")
    if config.task in ("id-adapter", "id-model") and config.model.conditioning != "arc2face":
        raise ConfigError(f"task {config.task} learns identity conditioning: set model.conditioning: arc2face",
                          "model.conditioning")
    if config.task == "id-model" and not config.model.vae:
        raise ConfigError("task id-model needs model.vae: the vae/ folder of a `task: vae` run (or any "
                          "diffusers AutoencoderKL folder)", "model.vae")
    if config.task == "id-model" and not config.model.init and not config.model.unet_config:
        raise ConfigError("task id-model from scratch needs model.unet_config (UNet2DConditionModel arguments), "
                          "or model.init: an Arc2Face pipeline folder to continue from", "model.unet_config")
    if config.optim.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"optim.mixed_precision must be no, fp16 or bf16, got {config.optim.mixed_precision!r}",
                          "optim.mixed_precision")
    if config.optim.id_loss_weight and config.task != "id-model":
        raise ConfigError(f"optim.id_loss_weight applies to task id-model only; set it to 0 for task {config.task}",
                          "optim.id_loss_weight")
    if config.optim.id_loss_weight and config.data.recognizer.split(":", 1)[0] != "mobilefacenet":
        raise ConfigError(f"optim.id_loss_weight > 0 needs data.recognizer: mobilefacenet (or mobilefacenet:PATH), got "
                          f"{config.data.recognizer!r}: the identity loss runs the conditioning recogniser in torch, "
                          "and MobileFaceNet's ONNX export is the one that loads into torch", "optim.id_loss_weight")
    if config.optim.optimizer not in ("auto", "adamw", "adamw8bit"):
        raise ConfigError(f"optim.optimizer must be auto, adamw or adamw8bit, got {config.optim.optimizer!r}",
                          "optim.optimizer")
    if len(config.optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers (AdamW's beta1 and beta2), got {config.optim.betas}",
                          "optim.betas")
