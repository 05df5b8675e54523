"""The one recogniser trainer, every backbone: MobileFaceNet, IResNet and EdgeFace (embedding networks
with an ArcFace, CosFace or AdaFace margin head) and the Face Transformer (a classifier whose embedding
``idgen forget`` edits), on one device or many (accelerate).

One config (:class:`RecognizerTrainConfig`, its ``backbone`` field says which network), one training
loop (:func:`_fit`: shuffled batches from a ``DataLoader``, margin loss, optional distillation, one
learning-rate schedule, :func:`warmup_cosine`) and one folder format (:func:`idgen.models.save_recognizer`:
``model.safetensors`` + ``config.json`` with its ``architecture``, a recogniser for :mod:`idgen.faces`).
What differs between the backbones is their published recipe, kept as it was:

- **mobilefacenet, iresnet, edgeface**: any face set (:func:`.data.read_face_set`), aligned once and cached,
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

import functools
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import BOX, CROP_SIDE, EMBEDDING_DIM, FACE_BATCH, SEED, UPSAMPLE, Range, check_ranges, ranged
from ..errors import ConfigError
from ..models import (BACKBONES, EDGEFACE_VARIANTS, HEADS, IRESNET_DEPTHS, PRESETS, FaceRecognizer, build_backbone, margin_head,
                      model_config, save_recognizer, to_tensor)
from .data import FaceDataConfig, FaceSet, align_images, load_face_folder, random_flip, read_face_set, to_model_input
from .distill import prepare_distillation

#: ``backbone`` (and the ``architecture`` its folder records): the embedding networks, then the Face Transformer.
ARCHITECTURES = (*BACKBONES, "face-transformer")
#: Margins of the ArcFace (angle), CosFace (cosine) and AdaFace (both, by feature norm) papers.
DEFAULT_MARGIN = HEADS

_EMBEDDING = {"format": "auto", "box": 0.42, "upsample": 0, "head": "arcface", "margin": None, "scale": 32.0,
              "width": 1.0, "input_size": 112, "embedding_size": 128, "epochs": 10, "lr": 0.1, "warmup": 0.05,
              "weight_decay": 5e-4}
#: Each backbone's own options with their defaults (the fields :class:`RecognizerTrainConfig` leaves
#: ``None``); an option missing from a backbone's table is not one of its options.
DEFAULTS: dict[str, dict] = {
    "mobilefacenet": _EMBEDDING,
    "iresnet": {**_EMBEDDING, "depth": 50, "embedding_size": 512, "scale": 64.0},
    "edgeface": {**{k: v for k, v in _EMBEDDING.items() if k != "width"}, "variant": "xs_gamma_06",
                 "embedding_size": 512, "scale": 64.0},
    "face-transformer": {"preset": "cpu-small", "input_size": None, "min_images": 2, "test_fraction": 0.25,
                         "max_train": None, "epochs": 30, "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 2,
                         "augment": True, "distill_from": None, "distill_weight": 10.0, "distill_images": None,
                         "distill_max_images": 0, "distill_batch_size": 32},
}
#: How each backbone's photos may be aligned.
ALIGNMENTS = {"mobilefacenet": ("dlib", "box"), "iresnet": ("dlib", "box"), "edgeface": ("dlib", "box"),
              "face-transformer": ("dlib", "resize")}
#: The options of fitting a Face Transformer already built on photos already read (:func:`fit`): a
#: forgetting run's ``model.train`` section (its photos are its ``data`` section, its folder ``model.path``).
FIT_OPTIONS = ("backbone", "epochs", "batch_size", "lr", "weight_decay", "seed", "warmup_epochs", "augment",
               "distill_from", "distill_weight", "distill_images", "distill_max_images", "distill_batch_size")


@dataclass
class RecognizerTrainConfig:
    """One recogniser training run, any backbone: ``idgen recognizer train --arch …``'s flags, and a
    forgetting run's ``model.train`` section (a Face Transformer). Options of only some backbones are
    ``None`` here and take that backbone's default (``DEFAULTS``); one set for a backbone that does
    not have it is an error, never silently ignored."""

    data: Optional[str] = None          # the photos; required by `train`
    output: Optional[str] = None        # folder for model.safetensors + config.json; required by `train`
    backbone: str = "mobilefacenet"     # mobilefacenet, iresnet or face-transformer
    epochs: Optional[int] = ranged(None, Range(1))   # default 10 (mobilefacenet, iresnet) / 30 (face-transformer)
    batch_size: int = ranged(64, FACE_BATCH)     # images per step
    lr: Optional[float] = ranged(None, Range(above=0))   # peak learning rate: 0.1 (SGD) / 1e-3 (AdamW, face-transformer)
    weight_decay: Optional[float] = ranged(None, Range(0))  # 5e-4 / 0.05 (face-transformer)
    seed: int = ranged(0, SEED)
    align: str = "dlib"                 # dlib landmarks; box: already aligned (mobilefacenet, iresnet); resize: already cropped (face-transformer)
    input_size: Optional[int] = ranged(None, CROP_SIDE)   # crop side: 112 (a multiple of 16) / face-transformer: the preset's; every crop is held in memory
    cache_dir: Optional[str] = ".cache/faces"  # aligned crops are cached here
    progress: bool = True
    format: Optional[str] = None        # mobilefacenet, iresnet: imagefolder, parquet, webdataset (default auto: by the files)
    box: Optional[float] = ranged(None, BOX)   # mobilefacenet, iresnet: centred box (fraction of the shorter side) for "box" / dlib misses; 0.42
    upsample: Optional[int] = ranged(None, UPSAMPLE)   # mobilefacenet, iresnet: dlib detector upsampling (as `idgen eval verify --upsample`); 0
    depth: Optional[int] = None         # iresnet only: 18, 34, 50 (default) or 100 (layers [2,2,2,2] … [3,13,30,3])
    variant: Optional[str] = None       # edgeface only: xs_gamma_06 (default), s_gamma_05, xxs or base (the published networks)
    head: Optional[str] = None          # mobilefacenet, iresnet: arcface (default), cosface or adaface
    margin: Optional[float] = ranged(None, Range(0))   # mobilefacenet, iresnet: default 0.5 (ArcFace) / 0.35 (CosFace) / 0.4 (AdaFace)
    scale: Optional[float] = ranged(None, Range(above=0))   # mobilefacenet, iresnet: logit scale s: 32 / iresnet 64
    width: Optional[float] = ranged(None, Range(at_most=4, above=0))   # mobilefacenet, iresnet: channel multiplier (memory grows with its square); 1.0
    embedding_size: Optional[int] = ranged(None, EMBEDDING_DIM)   # mobilefacenet, iresnet: 128 / iresnet 512
    warmup: Optional[float] = ranged(None, Range(0, below=1))   # mobilefacenet, iresnet: fraction of the steps with a linear warm-up (then cosine decay); 0.05
    preset: Optional[str] = None        # face-transformer: model size: paper, cpu-small (default), cpu-tiny
    min_images: Optional[int] = ranged(None, Range(2))   # face-transformer: skip identities with fewer images; 2
    test_fraction: Optional[float] = ranged(None, Range(above=0, below=1))   # face-transformer: share of each identity's images held out as its test images; 0.25
    max_train: Optional[int] = ranged(None, Range(1))   # face-transformer: at most this many training images per identity (default: all)
    warmup_epochs: Optional[int] = ranged(None, Range(0))   # face-transformer: epochs of linear warm-up inside a cosine decaying from the start; 2
    augment: Optional[bool] = None      # face-transformer: random flips and ±S/16 pixel shifts; true
    distill_from: Optional[str] = None  # face-transformer: also match a teacher's embeddings: "mobilefacenet:PATH" or an ONNX path
    distill_weight: Optional[float] = ranged(None, Range(0))   # face-transformer: weight of 1 − cos(student, teacher); 10
    distill_images: Optional[str] = None  # face-transformer: extra <identity>/<image> photos (other people) to distil on
    distill_max_images: Optional[int] = ranged(None, Range(0))   # face-transformer: how many of them (a seeded draw); 0
    distill_batch_size: Optional[int] = ranged(None, FACE_BATCH)   # face-transformer: extra images per step; 32

    def __post_init__(self):
        if self.backbone not in DEFAULTS:
            raise ConfigError(f"unknown backbone {self.backbone!r}; use one of {list(DEFAULTS)}")
        own = DEFAULTS[self.backbone]
        other = [f.name for f in fields(self) if f.name not in own and f.name in OPTIONAL_BY_BACKBONE
                 and getattr(self, f.name) is not None]
        if other:
            raise ConfigError(f"{', '.join(other)}: not an option of backbone {self.backbone!r} "
                              f"(its own: {', '.join(sorted(own))})")
        for name, default in own.items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        if self.backbone == "face-transformer":
            if self.preset not in PRESETS:
                raise ConfigError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
            self.input_size = self.input_size or PRESETS[self.preset]["image_size"]
        else:
            if self.head not in DEFAULT_MARGIN:
                raise ConfigError(f"unknown margin head {self.head!r}; use one of {sorted(DEFAULT_MARGIN)}")
            if self.backbone == "iresnet" and self.depth not in IRESNET_DEPTHS:
                raise ConfigError(f"IResNet depth {self.depth}: use one of {sorted(IRESNET_DEPTHS)}")
            if self.backbone == "edgeface" and self.variant not in EDGEFACE_VARIANTS:
                raise ConfigError(f"EdgeFace variant {self.variant!r}: use one of {sorted(EDGEFACE_VARIANTS)}",
                                  "variant")
        if self.align not in ALIGNMENTS[self.backbone]:
            raise ConfigError(f"align {self.align!r}: backbone {self.backbone!r} aligns with "
                              f"{' or '.join(ALIGNMENTS[self.backbone])}")
        check_ranges(self)
        if self.embedding_network and self.input_size % 16:
            raise ConfigError(f"input_size {self.input_size}: {self.backbone} takes crops whose side is a multiple "
                              "of 16", "input_size")
        if self.backbone == "edgeface" and self.input_size < 32:
            raise ConfigError(f"input_size {self.input_size}: EdgeFace takes crops of at least 32 pixels (its 4× stem "
                              "and three halvings leave one pixel of 32)", "input_size")

    @property
    def embedding_network(self) -> bool:
        """MobileFaceNet, IResNet or EdgeFace (the SGD recipe), not the Face Transformer (AdamW)."""
        return self.backbone in BACKBONES


#: The fields that only some backbones have (``None`` in the dataclass, filled from :data:`DEFAULTS`).
OPTIONAL_BY_BACKBONE = frozenset(name for table in DEFAULTS.values() for name in table)


def warmup_cosine(total: int, warmup: int, decay_from_start: bool = False):
    """The learning-rate schedule of every backbone, as a multiplier per step for ``LambdaLR``: a linear
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
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


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
    bar = tqdm(total=total, desc=f"training {config.backbone}", disable=not (config.progress and main))
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


def fit(model: torch.nn.Module, train: FaceSet, config: RecognizerTrainConfig, progress: bool = True,
        extra: FaceSet | None = None) -> dict:
    """Train a classifier already built (a Face Transformer, or an EdgeFace classifier: ``embed``, ``head``)
    on photos already read, with the Face Transformer's recipe (``config.backbone`` is ``face-transformer``),
    in this process, with the loop every backbone trains with; returns a small log (per-epoch mean
    losses, wall time)."""
    if config.backbone != "face-transformer":
        raise ConfigError(f"fit trains a Face Transformer (or an EdgeFace classifier) in memory with the Face "
                          f"Transformer's recipe; backbone {config.backbone!r} trains with "
                          "`train(RecognizerTrainConfig(...))`")
    torch.manual_seed(config.seed)   # the augmentation draws from torch's global generator
    start = time.perf_counter()
    losses, sizes = _fit(replace(config, progress=progress), model, model.head, train, extra)
    means = _epoch_means(losses, sizes, config.epochs)
    return {"epochs": config.epochs, "final_loss": means[-1], "losses": means,
            "wall_seconds": time.perf_counter() - start}


# --- a whole run: photos in, recogniser folder out -----------------------------------------------

def network_arguments(config: RecognizerTrainConfig) -> dict:
    """The arguments of ``config.backbone``'s embedding network (what its folder's ``config.json`` records
    as ``model``)."""
    if config.backbone == "edgeface":
        return {"variant": config.variant, "embedding_size": config.embedding_size, "input_size": config.input_size}
    shared = {"embedding_size": config.embedding_size, "width": config.width, "input_size": config.input_size}
    return {"depth": config.depth, **shared} if config.backbone == "iresnet" else shared


@torch.no_grad()
def _accuracy(model: FaceRecognizer, test: FaceSet) -> float:
    return 100.0 * float((predict(model, test) == test.labels).float().mean())


def train(config: RecognizerTrainConfig) -> dict:
    """Read ``config.data``, train ``config.backbone``, save its folder to ``config.output`` (main
    process), and return a summary; ``accelerate launch`` runs it in several processes (the embedding
    networks; a Face Transformer trains in one)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not config.data or not config.output:
        raise ConfigError("a recogniser training run needs data (the photos) and output (the folder to write)")
    accelerator = Accelerator()
    set_seed(config.seed)
    main = accelerator.is_main_process
    start = time.perf_counter()
    if config.embedding_network:
        faces = read_face_set(config.data, config.format)
        with accelerator.main_process_first():  # one process aligns and caches, the others read the cache
            crops = align_images(faces.images, config.input_size, config.align, config.box, config.upsample,
                                 config.cache_dir, progress=config.progress and main)
        train_set = FaceSet(torch.from_numpy(crops).permute(0, 3, 1, 2), torch.from_numpy(faces.labels), faces.names)
        network = build_backbone(config.backbone, network_arguments(config))
        head = margin_head(config.head, config.embedding_size, len(faces.names), config.scale, config.margin)
        losses, _ = _fit(config, network, head, train_set, accelerator=accelerator)
        window = max(1, min(10, len(losses) // 5))
        summary = {"images": len(train_set), "identities": len(faces.names), "processes": accelerator.num_processes,
                   "steps": len(losses),  # per process: each takes its share of every epoch
                   "first_loss": float(np.mean(losses[:window])), "final_loss": float(np.mean(losses[-window:]))}
        if main:
            network = accelerator.unwrap_model(network)
            save_recognizer(config.output, config.backbone, network, network.config, train=asdict(config),
                            summary=summary)
    else:
        if accelerator.num_processes > 1:
            raise ConfigError("a Face Transformer trains in one process; run it without `accelerate launch`")
        data = FaceDataConfig(root=config.data, align=config.align, image_size=config.input_size,
                              min_images_per_class=config.min_images, test_fraction=config.test_fraction,
                              max_train=config.max_train, cache_dir=config.cache_dir)
        train_set, test = load_face_folder(data)
        extra = None
        if config.distill_from:
            train_set, extra = prepare_distillation(train_set, data, config.distill_from, config.distill_images,
                                                    config.distill_max_images, config.seed)
        torch.manual_seed(config.seed)
        model = FaceRecognizer(model_config(config.preset, image_size=config.input_size,
                                            num_classes=len(train_set.class_names)))
        torch.manual_seed(config.seed)   # the augmentation draws from torch's global generator
        losses, sizes = _fit(config, model, model.head, train_set, extra, accelerator)
        model = accelerator.unwrap_model(model).cpu()
        summary = {"images": len(train_set), "test_images": len(test), "identities": len(train_set.class_names),
                   "parameters": model.num_parameters(), "steps": len(losses),
                   "final_loss": _epoch_means(losses, sizes, config.epochs)[-1],
                   "test_accuracy": _accuracy(model, test), "wall_seconds": time.perf_counter() - start}
        model.save_pretrained(config.output, train_set.class_names, train=asdict(config), summary=summary)
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


# --- the old names --------------------------------------------------------------------------------

#: Old names: the MobileFaceNet config and trainer are the one config and trainer (default backbone).
MobileFaceNetTrainConfig = RecognizerTrainConfig
train_mobilefacenet = train
#: Old name of the Face Transformer's config: the one config with ``backbone="face-transformer"``.
TrainConfig = functools.partial(RecognizerTrainConfig, backbone="face-transformer")
#: Old name of :func:`fit` (same arguments).
train_recognizer = fit
