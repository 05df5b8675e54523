"""The one recogniser trainer, every architecture: MobileFaceNet and IResNet (embedding networks with an
ArcFace, CosFace or AdaFace margin head) and the Face Transformer (a classifier whose embedding
``idgen forget`` edits), on one device or many (accelerate).

One config per architecture (a :class:`RecognizerTrainConfig` subclass, :data:`RECIPES`), one training
loop (:func:`_fit`: shuffled batches from a ``DataLoader``, margin loss, optional distillation, one
learning-rate schedule, :func:`warmup_cosine`) and one folder format (:func:`idgen.models.save_recognizer`:
``model.safetensors`` + ``config.json`` with its ``architecture``, a recogniser for :mod:`idgen.faces`).
What differs between the architectures is their published recipe, kept as it was:

- **mobilefacenet, iresnet**: any face set (:func:`.data.read_face_set`), aligned once and cached,
  held as uint8 crops; SGD with Nesterov momentum, a warm-up over the first ``warmup`` fraction of
  the steps, then a cosine to zero; random horizontal flips; the last partial batch is dropped (batch
  norm); the margin head's class centres are training-only, so the folder holds the network alone.
- **face-transformer**: an ``<identity>/<image>`` folder with a fixed train/test split per identity
  (:func:`.data.load_face_folder`); AdamW, ``warmup_epochs`` of warm-up inside a cosine that decays
  from the first step; flips and small shifts (``augment``); optional distillation of a pretrained
  recogniser's embeddings (:mod:`.distill`); the folder keeps the classifier head and the class names.

:func:`fit` is the same loop on a Face Transformer and a :class:`.data.FaceSet` already in memory,
as ``idgen forget`` trains its base model and its retrain baseline.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import BOX, CROP_SIDE, EMBEDDING_DIM, FACE_BATCH, SEED, UPSAMPLE, Range, check_ranges, ranged
from ..errors import ConfigError
from ..models import (HEADS, IRESNET_DEPTHS, PRESETS, FaceRecognizer, build_backbone, margin_head, model_config,
                      save_recognizer, to_tensor)
from .data import FaceDataConfig, FaceSet, align_images, load_face_folder, random_flip, read_face_set, to_model_input
from .distill import prepare_distillation

#: Margins of the ArcFace (angle), CosFace (cosine) and AdaFace (both, by feature norm) papers.
DEFAULT_MARGIN = HEADS


@dataclass
class RecognizerTrainConfig:
    """The options every recogniser training run has, whatever its architecture. A run is one of its
    subclasses, one per architecture (:data:`RECIPES`), each holding only its own recipe's options
    with that recipe's defaults: ``idgen recognizer train --architecture …``'s flags."""

    #: which network the run trains; each subclass sets it (the folder's ``config.json`` records it)
    architecture: ClassVar[str]
    #: how this architecture's photos may be aligned
    alignments: ClassVar[tuple[str, ...]]

    data: Optional[str] = None          # the photos; required by `train`
    output_dir: Optional[str] = None    # folder for model.safetensors + config.json; required by `train`
    epochs: int = ranged(10, Range(1))   # passes over the training photos
    batch_size: int = ranged(64, FACE_BATCH)     # images per step
    learning_rate: float = ranged(0.1, Range(above=0))   # peak learning rate
    weight_decay: float = ranged(5e-4, Range(0))   # the optimiser's weight decay
    seed: int = ranged(0, SEED)   # of the initial weights, the batches and the augmentation
    align: str = "dlib"                 # dlib: detect landmarks and align; box (already aligned; mobilefacenet, iresnet) or resize (already cropped; face-transformer)
    resolution: Optional[int] = ranged(112, CROP_SIDE)   # crop side in pixels; every crop is held in memory
    cache_dir: Optional[str] = ".cache/faces"  # aligned crops are cached here
    progress: bool = True               # progress bars

    def __post_init__(self):
        if self.align not in self.alignments:
            raise ConfigError(f"align {self.align!r}: architecture {self.architecture!r} aligns with "
                              f"{' or '.join(self.alignments)}", "align")
        check_ranges(self)

    @property
    def embedding_network(self) -> bool:
        """MobileFaceNet or IResNet (the SGD recipe), not the Face Transformer (AdamW)."""
        return isinstance(self, MobileFaceNetRecipe)


@dataclass
class MobileFaceNetRecipe(RecognizerTrainConfig):
    """MobileFaceNet with a margin head on any face set (:func:`.data.read_face_set`): SGD with Nesterov
    momentum, a linear warm-up over the first ``warmup`` fraction of the steps, then a cosine to zero."""

    architecture: ClassVar[str] = "mobilefacenet"
    alignments: ClassVar[tuple[str, ...]] = ("dlib", "box")   # box: the faces are already aligned

    format: str = "auto"                # imagefolder, parquet, webdataset; auto: by the files
    fallback_box: float = ranged(0.42, BOX)   # centred box (fraction of the shorter side) for align "box" and dlib misses
    upsample: int = ranged(0, UPSAMPLE)   # dlib detector upsampling (as `idgen eval verify --upsample`)
    head: str = "arcface"               # margin head: arcface, cosface or adaface
    margin: Optional[float] = ranged(None, Range(0))   # None: the head's own, 0.5 (ArcFace) / 0.35 (CosFace) / 0.4 (AdaFace)
    scale: float = ranged(32.0, Range(above=0))   # logit scale s of the margin head
    width: float = ranged(1.0, Range(at_most=4, above=0))   # channel multiplier (memory grows with its square)
    embedding_size: int = ranged(128, EMBEDDING_DIM)
    warmup: float = ranged(0.05, Range(0, below=1))   # fraction of the steps with a linear warm-up (then cosine decay)

    def __post_init__(self):
        super().__post_init__()
        if self.head not in DEFAULT_MARGIN:
            raise ConfigError(f"unknown margin head {self.head!r}; use one of {sorted(DEFAULT_MARGIN)}", "head")
        if self.resolution % 16:
            raise ConfigError(f"resolution {self.resolution}: {self.architecture} takes crops whose side is a "
                              "multiple of 16", "resolution")

    def network_arguments(self) -> dict:
        """The arguments of the embedding network (what its folder's ``config.json`` records as ``model``)."""
        return {"embedding_size": self.embedding_size, "width": self.width, "resolution": self.resolution}


@dataclass
class IResNetRecipe(MobileFaceNetRecipe):
    """insightface's IResNet with MobileFaceNet's recipe, wider and deeper by default."""

    architecture: ClassVar[str] = "iresnet"

    scale: float = ranged(64.0, Range(above=0))
    embedding_size: int = ranged(512, EMBEDDING_DIM)
    depth: int = 50                     # 18, 34, 50 or 100 (layers [2,2,2,2] … [3,13,30,3])

    def __post_init__(self):
        super().__post_init__()
        if self.depth not in IRESNET_DEPTHS:
            raise ConfigError(f"IResNet depth {self.depth}: use one of {sorted(IRESNET_DEPTHS)}", "depth")

    def network_arguments(self) -> dict:
        return {"depth": self.depth, **super().network_arguments()}


@dataclass
class FaceTransformerRecipe(RecognizerTrainConfig):
    """A Face Transformer classifier on an ``<identity>/<image>`` folder with a fixed train/test split
    per identity (:func:`.data.load_face_folder`): AdamW, ``warmup_epochs`` of warm-up inside a cosine
    that decays from the first step, optional distillation of a pretrained recogniser's embeddings."""

    architecture: ClassVar[str] = "face-transformer"
    alignments: ClassVar[tuple[str, ...]] = ("dlib", "resize")   # resize: the faces are already cropped

    epochs: int = ranged(30, Range(1))
    learning_rate: float = ranged(1e-3, Range(above=0))
    weight_decay: float = ranged(0.05, Range(0))
    resolution: Optional[int] = ranged(None, CROP_SIDE)   # None: the preset's
    preset: str = "cpu-small"           # model size: paper, cpu-small, cpu-tiny
    min_images: int = ranged(2, Range(2))   # skip identities with fewer images
    test_fraction: float = ranged(0.25, Range(above=0, below=1))   # share of each identity's images held out as its test images
    max_train: Optional[int] = ranged(None, Range(1))   # at most this many training images per identity (default: all)
    warmup_epochs: int = ranged(2, Range(0))   # epochs of linear warm-up inside a cosine decaying from the start
    augment: bool = True                # random flips and ±S/16 pixel shifts
    distill_from: Optional[str] = None  # also match a teacher's embeddings: "mobilefacenet:PATH" or an ONNX path
    distill_weight: float = ranged(10.0, Range(0))   # weight of 1 − cos(student, teacher)
    distill_images: Optional[str] = None  # extra <identity>/<image> photos (other people) to distil on
    distill_max_images: int = ranged(0, Range(0))   # how many of them (a seeded draw)
    distill_batch_size: int = ranged(32, FACE_BATCH)   # extra images per step

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}", "preset")
        self.resolution = self.resolution or PRESETS[self.preset]["resolution"]
        super().__post_init__()


#: Each architecture's recipe, by the name ``--architecture`` takes and its folder records.
RECIPES: dict[str, type[RecognizerTrainConfig]] = {
    recipe.architecture: recipe for recipe in (MobileFaceNetRecipe, IResNetRecipe, FaceTransformerRecipe)}
ARCHITECTURES = tuple(RECIPES)
#: The options of fitting a Face Transformer already built on photos already read (:func:`fit`): a
#: forgetting run's ``model.train`` section (its photos are its ``data`` section, its folder ``model.path``).
FIT_OPTIONS = ("epochs", "batch_size", "learning_rate", "weight_decay", "seed", "warmup_epochs", "augment",
               "distill_from", "distill_weight", "distill_images", "distill_max_images", "distill_batch_size")


def warmup_cosine(total: int, warmup: int, decay_from_start: bool = False):
    """The learning-rate schedule of every architecture, as a multiplier per step for ``LambdaLR``: a linear
    rise over the first ``warmup`` steps (1 from step ``warmup − 1`` on), times a half cosine from 1 to 0
    over the steps after the warm-up, or over all ``total`` steps with ``decay_from_start`` (the Face
    Transformer's recipe; MobileFaceNet's and IResNet's decay after the warm-up)."""
    ramp = max(1, warmup)
    start = 0 if decay_from_start else ramp
    span = max(1, total - start)
    return lambda step: (min(1.0, (step + 1) / ramp)
                         * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, step - start) / span))))


# --- the loop ---------------------------------------------------------------------------------------

def _optimizer(config: RecognizerTrainConfig, params: list) -> torch.optim.Optimizer:
    if config.embedding_network:
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _warmup_steps(config: RecognizerTrainConfig, total: int, steps_per_epoch: int) -> int:
    if config.embedding_network:
        return round(config.warmup * total)
    return config.warmup_epochs * steps_per_epoch


class _Reshuffled(torch.utils.data.Sampler):
    """0..n−1 in a new random order every pass, drawn from ``generator`` and nothing else (a
    ``DataLoader``'s own seed comes from the generator it is given, so torch's global one is untouched)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


def _extra_batches(n: int, batch_size: int, generator: torch.Generator):
    """Index batches over ``n`` images, reshuffled every pass, for ever (the distillation extras)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start: start + batch_size]


def _distill_loss(embeddings: torch.Tensor, teacher: torch.Tensor, projection) -> torch.Tensor:
    student = embeddings if projection is None else projection(embeddings)
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def _fit(config: RecognizerTrainConfig, network: torch.nn.Module, head: torch.nn.Module, train: FaceSet,
         extra: FaceSet | None = None, accelerator=None) -> tuple[list[float], list[int]]:
    """Train ``network`` and its margin ``head`` on ``train``: the loss and the batch size of every step.
    An embedding network's forward gives the embeddings and ``head`` is its own module; a Face
    Transformer's ``embed`` gives them and ``head`` is part of it. With an ``accelerator``, modules,
    optimiser, schedule and batches are prepared by it (several processes); without, everything stays on
    the network's device.

    When ``train.teacher`` holds teacher embeddings, ``distill_weight · (1 − cos)`` to them is added, also
    on a batch of ``extra`` (unlabelled, with teacher embeddings) per step; a linear projection, used only
    during training, maps the student's embedding to the teacher's width when they differ."""
    distill = train.teacher is not None
    projection = None
    if distill and train.teacher.shape[1] != head.weight.shape[1]:
        projection = torch.nn.Linear(head.weight.shape[1], train.teacher.shape[1], bias=False)
    trained = [network, *([head] if config.embedding_network else []), *([projection] if projection else [])]
    optimizer = _optimizer(config, [p for module in trained for p in module.parameters()])
    order = torch.Generator().manual_seed(config.seed)
    indices = torch.utils.data.TensorDataset(torch.arange(len(train)))
    if config.embedding_network:
        loader = torch.utils.data.DataLoader(indices, batch_size=config.batch_size, shuffle=True,
                                             drop_last=len(train) > config.batch_size, generator=order)
    else:   # the Face Transformer's recipe: batches and distillation extras drawn from one generator
        loader = torch.utils.data.DataLoader(indices, batch_size=config.batch_size, sampler=_Reshuffled(len(train), order),
                                             generator=torch.Generator().manual_seed(config.seed))
    total = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        total, _warmup_steps(config, total, len(loader)), decay_from_start=not config.embedding_network))
    process = 0
    if accelerator is not None:
        *trained, optimizer, loader, schedule = accelerator.prepare(*trained, optimizer, loader, schedule)
        process = accelerator.process_index
    if config.embedding_network:
        embed, head = trained[0], trained[1]
    else:
        embed = trained[0].embed
    device = next(network.parameters()).device
    flips = torch.Generator().manual_seed(config.seed + process)
    extras = None
    if distill and extra is not None:
        extras = _extra_batches(len(extra), config.distill_batch_size, order)

    def inputs(images: torch.Tensor) -> torch.Tensor:
        if config.embedding_network:
            return random_flip(to_tensor(images.to(device), channels_last=False), flips)
        return to_model_input(images, config.augment).to(device)

    losses, sizes = [], []
    main = accelerator is None or accelerator.is_main_process
    bar = tqdm(total=total, desc=f"training {config.architecture}", disable=not (config.progress and main))
    for module in trained:
        module.train()
    for _ in range(config.epochs):
        for (index,) in loader:
            index = index.cpu()
            labels = train.labels[index].to(device)
            embeddings = embed(inputs(train.images[index]))
            loss = F.cross_entropy(head(embeddings, labels), labels)
            if distill:
                loss = loss + config.distill_weight * _distill_loss(
                    embeddings, train.teacher[index].to(device), projection)
            if extras is not None:
                more = next(extras)
                loss = loss + config.distill_weight * _distill_loss(
                    embed(inputs(extra.images[more])), extra.teacher[more].to(device), projection)
            optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                accelerator.backward(loss)
            else:
                loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            sizes.append(len(index))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    for module in trained:
        module.eval()
    return losses, sizes


def _epoch_means(losses: list[float], sizes: list[int], epochs: int) -> list[float]:
    steps = len(losses) // epochs
    return [float(np.average(losses[e * steps:(e + 1) * steps], weights=sizes[e * steps:(e + 1) * steps]))
            for e in range(epochs)]


def fit(model: FaceRecognizer, train: FaceSet, config: RecognizerTrainConfig, progress: bool = True,
        extra: FaceSet | None = None) -> dict:
    """Train a Face Transformer already built on photos already read (``config`` is a
    :class:`FaceTransformerRecipe`), in this process, with the loop every architecture trains with; returns a small
    log (per-epoch mean losses, wall time)."""
    if not isinstance(config, FaceTransformerRecipe):
        raise ConfigError(f"fit trains a Face Transformer in memory; architecture {config.architecture!r} trains "
                          f"with `train({type(config).__name__}(...))`")
    torch.manual_seed(config.seed)   # the augmentation draws from torch's global generator
    start = time.perf_counter()
    losses, sizes = _fit(replace(config, progress=progress), model, model.head, train, extra)
    means = _epoch_means(losses, sizes, config.epochs)
    return {"epochs": config.epochs, "final_loss": means[-1], "losses": means,
            "wall_seconds": time.perf_counter() - start}


# --- a whole run: photos in, recogniser folder out -----------------------------------------------

@torch.no_grad()
def _accuracy(model: FaceRecognizer, test: FaceSet) -> float:
    return 100.0 * float((predict(model, test) == test.labels).float().mean())


def train(config: RecognizerTrainConfig) -> dict:
    """Read ``config.data``, train ``config.architecture``, save its folder to ``config.output_dir`` (main
    process), and return a summary; ``accelerate launch`` runs it in several processes (the embedding
    networks; a Face Transformer trains in one)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not config.data or not config.output_dir:
        raise ConfigError("a recogniser training run needs data (the photos) and output_dir (the folder to write)")
    accelerator = Accelerator()
    set_seed(config.seed)
    main = accelerator.is_main_process
    start = time.perf_counter()
    if config.embedding_network:
        faces = read_face_set(config.data, config.format)
        with accelerator.main_process_first():  # one process aligns and caches, the others read the cache
            crops = align_images(faces.images, config.resolution, config.align, config.fallback_box, config.upsample,
                                 config.cache_dir, progress=config.progress and main)
        train_set = FaceSet(torch.from_numpy(crops).permute(0, 3, 1, 2), torch.from_numpy(faces.labels), faces.names)
        network = build_backbone(config.architecture, config.network_arguments())
        head = margin_head(config.head, config.embedding_size, len(faces.names), config.scale, config.margin)
        losses, _ = _fit(config, network, head, train_set, accelerator=accelerator)
        window = max(1, min(10, len(losses) // 5))
        summary = {"images": len(train_set), "identities": len(faces.names), "processes": accelerator.num_processes,
                   "steps": len(losses),  # per process: each takes its share of every epoch
                   "first_loss": float(np.mean(losses[:window])), "final_loss": float(np.mean(losses[-window:]))}
        if main:
            network = accelerator.unwrap_model(network)
            save_recognizer(config.output_dir, config.architecture, network, network.config, train=asdict(config),
                            summary=summary)
    else:
        if accelerator.num_processes > 1:
            raise ConfigError("a Face Transformer trains in one process; run it without `accelerate launch`")
        data = FaceDataConfig(root=config.data, align=config.align, resolution=config.resolution,
                              min_images_per_class=config.min_images, test_fraction=config.test_fraction,
                              max_train=config.max_train, cache_dir=config.cache_dir)
        train_set, test = load_face_folder(data)
        extra = None
        if config.distill_from:
            train_set, extra = prepare_distillation(train_set, data, config.distill_from, config.distill_images,
                                                    config.distill_max_images, config.seed)
        torch.manual_seed(config.seed)
        model = FaceRecognizer(model_config(config.preset, resolution=config.resolution,
                                            num_classes=len(train_set.class_names)))
        torch.manual_seed(config.seed)   # the augmentation draws from torch's global generator
        losses, sizes = _fit(config, model, model.head, train_set, extra, accelerator)
        model = accelerator.unwrap_model(model).cpu()
        summary = {"images": len(train_set), "test_images": len(test), "identities": len(train_set.class_names),
                   "parameters": model.num_parameters(), "steps": len(losses),
                   "final_loss": _epoch_means(losses, sizes, config.epochs)[-1],
                   "test_accuracy": _accuracy(model, test), "wall_seconds": time.perf_counter() - start}
        model.save_pretrained(config.output_dir, train_set.class_names, train=asdict(config), summary=summary)
    accelerator.wait_for_everyone()
    return summary


# --- a Face Transformer's predictions ------------------------------------------------------------

@torch.no_grad()
def predict(model: FaceRecognizer, data: FaceSet, batch_size: int = 256, exclude=()) -> torch.Tensor:
    """Arg-max class (no margin) for every image, over all classes but those in ``exclude``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    excluded = torch.as_tensor(sorted(exclude), dtype=torch.long, device=device)
    out = torch.cat([model(to_model_input(data.images[i: i + batch_size]).to(device))
                     .index_fill(1, excluded, float("-inf")).argmax(1).cpu() for i in range(0, len(data), batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def embed(model: FaceRecognizer, data: FaceSet, batch_size: int = 256) -> torch.Tensor:
    """A Face Transformer's embedding (not normalised) of every image of ``data``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model.embed(to_model_input(data.images[i: i + batch_size]).to(device)).cpu()
                     for i in range(0, len(data), batch_size)])
    model.train(was_training)
    return out
