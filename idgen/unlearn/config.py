"""The YAML configuration of a forgetting run, checked strictly: an unknown key is an error that
names it (a typo must never silently fall back to a default). Relative paths in the file are
relative to the file, those in overrides to the current directory (see :mod:`idgen.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import FACE_BATCH, PATH, SEED, PathRule, Range, YamlConfig, path_field, ranged
from ..errors import ConfigError
from ..models import model_config
from ..recognition.data import FaceDataConfig
from ..recognition.trainer import FIT_OPTIONS, FaceTransformerRecipe


@dataclass
class GroupSparseLoraConfig:
    """GS-LoRA's LoRA on a Face Transformer: adapters on the feed-forward linears, grouped so that the
    group-lasso loss can switch whole groups off (:mod:`idgen.unlearn.lora`); not the generator LoRA a
    ``personalize`` run trains (:class:`idgen.training.config.GeneratorLoraConfig`)."""

    rank: int = ranged(8, Range(1, 1024))    # the adapters' inner size (their memory grows with it)
    alpha: float | None = ranged(None, Range(above=0))   # LoRA scaling numerator; None = rank (scale 1)
    grouping: str = "block"           # "block", "lora" (A+B of one linear) or "matrix"
    target_pattern: str | None = None  # regex over module names; None = FFN linears found by structure
    target_parameters: list = field(default_factory=list)  # more weights, each its own group (["head.weight"])
    zero_tol: float = ranged(1e-3, Range(0))   # a group counts as zero when its norm is below this


@dataclass
class ForgetConfig:
    epochs: int = ranged(20, Range(1))
    batch_size: int = ranged(64, FACE_BATCH)          # retained images per step
    forget_batch_size: int = ranged(32, FACE_BATCH)   # forgotten images per step
    learning_rate: float = ranged(1e-2, Range(above=0))
    beta: float = ranged(0.15, Range(0))              # weight of the forgetting loss
    bound: float = ranged(40.0, Range(above=0))       # BND of ReLU(BND − CE_forget)
    alpha: float = ranged(0.01, Range(0))             # weight of the group-lasso structure loss
    proximal: bool = True             # apply it as a group soft-threshold step (exact zeros), else as a loss term
    warmup_epochs: int = ranged(2, Range(0))          # epochs with alpha = 0
    prototype_weight: float = ranged(0.0, Range(0))   # > 0 turns GS-LoRA into GS-LoRA++
    prototype_bound: float | None = ranged(None, Range(above=0))   # the push-away bound on prototype logits; None = ``bound``
    augment: bool = True
    lora: GroupSparseLoraConfig = field(default_factory=GroupSparseLoraConfig)


@dataclass
class TasksConfig:
    """Which identities to forget: explicit ``identities`` (a list of lists of folder names, one list
    per task), or ``num_tasks`` × ``classes_per_task`` drawn with ``seed``."""

    identities: list | None = None
    num_tasks: int = ranged(1, Range(1))
    classes_per_task: int = ranged(1, Range(1))
    seed: int = ranged(0, SEED)
    shots: int | None = ranged(None, Range(1))   # few-shot: k training images per forgotten/retained class
    missing_fraction: float = ranged(0.0, Range(0, below=1))   # missing-class: share of retained classes with no data at all


@dataclass
class ModelConfig:
    path: str = path_field()           # recogniser folder: loaded if present, else trained and saved there
    preset: str | None = "cpu-small"
    #: the Face Transformer's sizes on top of the preset (``idgen.models.FaceTransformerConfig``:
    #: resolution, patch_size, dim, depth, heads, mlp_dim, embedding_dim, …), checked when the config is read
    overrides: dict = field(default_factory=dict)
    #: how the base model is trained when model.path holds none: the options of the Face Transformer's
    #: recipe (``idgen.recognition.FaceTransformerRecipe``) that fit a model in memory: epochs, batch_size,
    #: learning_rate, weight_decay, seed, warmup_epochs, augment, distill_* (the photos are ``data``'s)
    train: FaceTransformerRecipe = path_field(default_factory=FaceTransformerRecipe, rule={
        "distill_from": PathRule(prefixed=True),   # "mobilefacenet:PATH" or a path
        "distill_images": PATH})


@dataclass
class BaselinesConfig:
    methods: list = field(default_factory=lambda: ["retrain", "finetune"])   # and/or "drop-classes"
    retrain_epochs: int | None = ranged(None, Range(1))   # None = forget.epochs (the same training budget)
    finetune_learning_rate: float | None = ranged(None, Range(above=0))   # None = forget.learning_rate (same hyper-parameters, all weights trainable)
    finetune_bound: float | None = ranged(None, Range(above=0))   # None = forget.bound


@dataclass
class SelectionConfig:
    """Learning rates, BND (and GS-LoRA's α, GS-LoRA++'s prototype weight γ) chosen by one rule for
    every method: the last ``val_per_class`` training images of each identity are held out of all
    training (base model included) as a validation split; each listed learning rate, crossed with each listed
    bound (and α, γ), runs the whole task sequence on the rest and is scored by its mean H-Mean on
    the validation images; the best one is used for the reported run on the test images."""

    val_per_class: int = ranged(0, Range(0))   # 0: no validation split, lrs as configured
    gs_lora_learning_rates: list[float] = ranged(default_factory=list, allowed=Range(above=0))    # candidates for forget.learning_rate
    finetune_learning_rates: list[float] = ranged(default_factory=list, allowed=Range(above=0))   # candidates for baselines.finetune_learning_rate
    bounds: list[float] = ranged(default_factory=list, allowed=Range(above=0))   # candidates for BND (forget.bound, baselines.finetune_bound)
    alphas: list[float] = ranged(default_factory=list, allowed=Range(0))   # candidates for forget.alpha (GS-LoRA only)
    prototype_weights: list[float] = ranged(default_factory=list, allowed=Range(0))  # candidates for forget.prototype_weight (GS-LoRA++ only)


@dataclass
class RunConfig(YamlConfig):
    #: the photos (``idgen.recognition.data.FaceDataConfig``)
    data: FaceDataConfig = path_field(rule={"root": PATH, "cache_dir": PATH})
    model: ModelConfig
    output_dir: str = path_field()
    forget: ForgetConfig = field(default_factory=ForgetConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    method: str = "gs-lora"            # "gs-lora" or "gs-lora++"
    seed: int = ranged(0, SEED)
    repeats: int = ranged(1, Range(1, 100))   # training seeds per run (seed, seed + 1, …): reports mean ± spread
    save_model: bool = True

    def __post_init__(self):
        _check_model_sizes(self)

    @classmethod
    def prepare(cls, values: dict) -> dict:
        _only_fit_options(values)
        return values


def _check_model_sizes(config: RunConfig) -> None:
    """The Face Transformer that ``model.preset`` and ``model.overrides`` describe for
    ``data.resolution`` crops (as :func:`idgen.unlearn.run_forgetting` builds it) is a valid one."""
    try:
        model_config(config.model.preset, **{"resolution": config.data.resolution, **config.model.overrides})
    except ConfigError as exc:
        raise ConfigError(f"model.overrides: {exc}", "model.overrides") from None


def _only_fit_options(values: dict) -> None:
    """Refuse, by name, a ``model.train`` option that is not one of fitting a Face Transformer in memory
    (:data:`~idgen.recognition.trainer.FIT_OPTIONS`): the photos are ``data``'s, the folder ``model.path``."""
    model = values.get("model")
    train = model.get("train") if isinstance(model, dict) else None
    if not isinstance(train, dict):
        return                 # build_dataclass names what is wrong
    foreign = sorted(set(train) - set(FIT_OPTIONS))
    if foreign:
        raise ConfigError(f"model.train: {', '.join(foreign)} not an option of training the base model here; it "
                          f"takes {', '.join(FIT_OPTIONS)} (the photos are data's, the folder model.path)",
                          f"model.train.{foreign[0]}")
