"""Train an embedding backbone, MobileFaceNet or IResNet, with a margin head (ArcFace, CosFace or
AdaFace), on one device or many (accelerate).

The face set is aligned once (cached), held in memory as uint8 crops (37 KB a face at 112 px:
about 2 GB for 50K images), and fed in shuffled batches with random horizontal flips. SGD with
Nesterov momentum; the learning rate rises linearly over the first ``warmup`` fraction of the
steps and then follows a cosine to zero (:func:`idgen.recognition.train.warmup_cosine`).
The output folder holds ``model.safetensors`` (the embedding network; the margin head's class
centres are training-only) and ``config.json`` (``architecture``: ``mobilefacenet`` or ``iresnet``,
and the network's arguments); it is a recogniser for :mod:`idgen.faces`. The names say
MobileFaceNet, the first backbone it trained; ``backbone="iresnet"`` trains an IResNet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io import save_module_weights, write_json_atomic
from ..models import BACKBONES, HEADS, IRESNET_DEPTHS, build_backbone, margin_head, to_tensor
from .data import align_images, random_flip, read_face_set
from .train import warmup_cosine


#: Margins of the ArcFace (angle), CosFace (cosine) and AdaFace (both, by feature norm) papers.
DEFAULT_MARGIN = HEADS


@dataclass
class MobileFaceNetTrainConfig:
    """A MobileFaceNet or IResNet training run: ``idgen recognizer train --arch mobilefacenet|iresnet``'s flags."""

    data: str
    output: str
    format: str = "auto"            # imagefolder, parquet, webdataset (auto: by the files)
    align: str = "dlib"             # dlib landmarks, or "box" for already aligned faces
    box: float = 0.42               # centred box (fraction of the shorter side) for "box" / dlib misses
    upsample: int = 0               # dlib detector upsampling (as `idgen eval verify --upsample`)
    cache_dir: Optional[str] = ".cache/faces"
    backbone: str = "mobilefacenet"  # or "iresnet"
    depth: int = 50                  # IResNet depth: 18, 34, 50 or 100 (layers [2,2,2,2] … [3,13,30,3])
    head: str = "arcface"           # or "cosface", "adaface"
    margin: Optional[float] = None  # default 0.5 (ArcFace) / 0.35 (CosFace) / 0.4 (AdaFace)
    scale: float = 32.0             # `--arch iresnet`'s default is 64
    width: float = 1.0
    input_size: int = 112
    embedding_size: int = 128       # `--arch iresnet`'s default is 512
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    warmup: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.head not in DEFAULT_MARGIN:
            raise ConfigError(f"unknown margin head {self.head!r}; use one of {sorted(DEFAULT_MARGIN)}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; use one of {sorted(BACKBONES)}")
        if self.backbone == "iresnet" and self.depth not in IRESNET_DEPTHS:
            raise ConfigError(f"IResNet depth {self.depth}: use one of {sorted(IRESNET_DEPTHS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be ≥ 1, got {self.epochs} and {self.batch_size}")


def network_arguments(config: MobileFaceNetTrainConfig) -> dict:
    """The arguments of ``config.backbone``'s network (what its folder's ``config.json`` records as ``model``)."""
    shared = {"embedding_size": config.embedding_size, "width": config.width, "input_size": config.input_size}
    return {"depth": config.depth, **shared} if config.backbone == "iresnet" else shared


def train_mobilefacenet(config: MobileFaceNetTrainConfig) -> dict:
    """Train, save ``model.safetensors`` + ``config.json`` to ``config.output`` (main process), return a summary."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator()
    set_seed(config.seed)
    faces = read_face_set(config.data, config.format)
    with accelerator.main_process_first():  # one process aligns and caches, the others read the cache
        crops = align_images(faces.images, config.input_size, config.align, config.box, config.upsample, config.cache_dir,
                             progress=config.progress and accelerator.is_main_process)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(crops), torch.from_numpy(faces.labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                         drop_last=len(dataset) > config.batch_size,
                                         generator=torch.Generator().manual_seed(config.seed))
    model = build_backbone(config.backbone, network_arguments(config))
    head = margin_head(config.head, config.embedding_size, len(faces.names), config.scale, config.margin)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=config.lr, momentum=0.9,
                                nesterov=True, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, round(config.warmup * total)))
    model, head, optimizer, loader, schedule = accelerator.prepare(model, head, optimizer, loader, schedule)
    flips = torch.Generator().manual_seed(config.seed + accelerator.process_index)

    losses = []
    bar = tqdm(total=total, desc="training", disable=not (config.progress and accelerator.is_main_process))
    model.train()
    for _ in range(config.epochs):
        for images, labels in loader:
            loss = F.cross_entropy(head(model(random_flip(to_tensor(images), flips)), labels), labels)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()

    window = max(1, min(10, len(losses) // 5))
    summary = {"images": len(dataset), "identities": len(faces.names), "processes": accelerator.num_processes,
               "steps": len(losses),  # per process: each takes its share of every epoch
               "first_loss": float(np.mean(losses[:window])), "final_loss": float(np.mean(losses[-window:]))}
    if accelerator.is_main_process:
        network = accelerator.unwrap_model(model)
        out = Path(config.output)
        save_module_weights(network, out / "model.safetensors")
        write_json_atomic(out / "config.json", {"architecture": config.backbone, "model": network.config,
                                                "train": asdict(config), "summary": summary})
    accelerator.wait_for_everyone()
    return summary
