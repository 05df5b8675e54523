"""One recipe per task of ``training/train.py``: what the task trains, its loss, its validation and
what it saves. The loop in ``training/train.py`` is the same for every task.

A recipe is built after ``set_seed``; it creates its networks, batches and parameter groups in a
fixed order, so a run and its resumption start from the same weights. Everything random about a
training example is drawn from the example's own generator (:mod:`.randomness`) in a fixed order —
flip, guidance dropout, then what the loss draws — so a step computes the same thing however its
examples are split between processes, and a resumed run redraws what the uninterrupted one drew.

With several processes, LoRA tasks average their few small gradients with one flat all-reduce per
step (:func:`~.distributed.average_gradients`), keeping the frozen UNet the plain module that the
validation pipeline and the LoRA writer use; whole-network tasks train under
``DistributedDataParallel`` (``accelerator.prepare``), which all-reduces their gradients in buckets
during the backward pass.

- ``id-adapter``, ``personalize`` (:class:`LoraRecipe`): LoRA on the frozen UNet (and text encoder);
  saves ``pytorch_lora_weights.safetensors``.
- ``id-model`` (:class:`IdModelRecipe`): the whole UNet and text encoder on a frozen VAE's latents,
  optionally with the identity loss; saves the Arc2Face pipeline.
- ``vae`` (:class:`VaeRecipe`): the whole ``AutoencoderKL``; saves ``vae/`` with standardised latents.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..faces import FaceAnalyzer
from ..io import save_pretrained_atomic
from . import validation
from .config import TrainConfig
from .data import FaceDataset, FaceFolder, SeededBatches
from .distributed import average_gradients
from .identity_loss import IdentityLoss, identity_diffusion_loss
from .lora import add_training_lora, save_lora_weights
from .losses import latent_diffusion_loss, vae_loss
from .components import (Components, Conditioning, build_pipeline, full_training_groups, load_components,
                     new_components, standardize_latents)
from .prior import prior_images
from .randomness import rand


@contextlib.contextmanager
def averaged_weights(ema, params: list[torch.nn.Parameter]):
    """Inside: the EMA weights in the model (for validation and saving); after: the trained ones.
    ``ema`` ``None``: the trained weights throughout."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


class TrainingStep(torch.nn.Module):
    """The networks a whole-network task trains, as one module whose forward is the task's loss, so
    that ``DistributedDataParallel`` sees one forward per backward however many times the loss calls
    each network (the text encoder runs twice when guidance dropout drops some identities)."""

    def __init__(self, loss, networks: dict[str, torch.nn.Module]):
        super().__init__()
        self.loss = loss
        self.networks = torch.nn.ModuleDict(networks)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.loss(batch)


class Recipe:
    """What every task shares: the seeded batches with their flips, the parameter ``groups`` the
    optimizer steps and the ``trainable`` models by name (checkpointed by
    :func:`~.checkpoints.register_trainable_state`). Subclasses set those, ``valset``, and implement
    :meth:`compute_loss`, :meth:`validate` and :meth:`save`; whole-network tasks end their
    construction with :meth:`distribute`."""

    #: whether an example's identity is dropped with probability ``optim.cfg_dropout``
    learns_identity = False

    def __init__(self, cfg: TrainConfig, accelerator, faces: FaceFolder, prompt: str = ""):
        self.cfg, self.accelerator, self.device = cfg, accelerator, accelerator.device
        self.dataset = FaceDataset(faces.files, faces.id_embeds, cfg.data.resolution, prompt, faces.landmarks,
                                   cfg.data.face_scale)
        self.batches = SeededBatches(self.dataset, cfg.optim.batch_size, cfg.seed, accelerator.num_processes,
                                     accelerator.process_index)
        self.groups: list[dict] = []
        self.trainable: dict[str, Optional[torch.nn.Module]] = {}
        self.valset = None
        self.wrapped: Optional[torch.nn.Module] = None   # the prepared TrainingStep of a whole-network task

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.groups for p in group["params"]]

    @property
    def trained(self) -> list[torch.nn.Module]:
        return [m for m in self.trainable.values() if m is not None]

    def batch(self, micro_step: int) -> dict:
        """Micro-batch ``micro_step`` of this process, mirrored where its ``flip`` draw says, with the
        ``drop`` mask of guidance dropout (``None`` for tasks that do not learn identity)."""
        batch = self.batches.batch(micro_step)
        flip = rand(batch["generators"]) < self.cfg.data.flip
        batch["pixel_values"] = torch.where(flip[:, None, None, None], batch["pixel_values"].flip(-1),
                                            batch["pixel_values"])
        batch["flip"] = flip
        batch["drop"] = rand(batch["generators"]) < self.cfg.optim.cfg_dropout if self.learns_identity else None
        return batch

    def compute_loss(self, batch: dict) -> torch.Tensor:
        """The scalar loss of one micro-batch (called inside ``accelerator.autocast``)."""
        raise NotImplementedError

    def distribute(self) -> None:
        """Train the ``trainable`` networks as one :class:`TrainingStep` prepared by accelerate
        (``DistributedDataParallel`` with several processes; the module itself with one)."""
        networks = {name: model for name, model in self.trainable.items() if model is not None}
        self.wrapped = self.accelerator.prepare(TrainingStep(self.compute_loss, networks))

    def loss(self, batch: dict) -> torch.Tensor:
        """:meth:`compute_loss`, through the prepared :class:`TrainingStep` when there is one."""
        return self.compute_loss(batch) if self.wrapped is None else self.wrapped(batch)

    @property
    def synced(self) -> list[torch.nn.Module]:
        """The modules ``accelerator.accumulate`` keeps from all-reducing between optimizer steps."""
        return [] if self.wrapped is None else [self.wrapped]

    def average_gradients(self) -> None:
        """Make every process's gradients their mean over all processes: one flat all-reduce, unless
        ``DistributedDataParallel`` already averaged them during the backward pass."""
        if self.wrapped is None:
            average_gradients(self.accelerator, self.params)

    @property
    def gradient_sync(self) -> str:
        """How gradients are averaged over processes: ``none`` (one process),
        ``DistributedDataParallel`` or ``all-reduce``."""
        if self.accelerator.num_processes == 1:
            return "none"
        return "all-reduce" if self.wrapped is None else type(self.wrapped).__name__

    def step_metrics(self) -> dict:
        """Task-specific numbers of the optimizer step just taken (``None``: not measured this step)."""
        return {}

    @contextlib.contextmanager
    def evaluating(self, ema):
        """Inside: the trained models in eval mode with the EMA weights, under autocast."""
        for model in self.trained:
            model.eval()
        with averaged_weights(ema, self.params), self.accelerator.autocast():
            yield
        for model in self.trained:
            model.train()

    def validate(self, ema) -> tuple[dict, np.ndarray]:
        """Metrics on ``valset`` and an image grid (main process, ``valset`` set)."""
        raise NotImplementedError

    def save(self, output_dir: Path) -> Path:
        """Write the trained result into ``output_dir``; returns what it wrote."""
        raise NotImplementedError


class VaeRecipe(Recipe):
    """``task: vae``: a fresh ``AutoencoderKL``, L1 + KL loss, PSNR of held-out reconstructions."""

    def __init__(self, cfg: TrainConfig, accelerator, faces: FaceFolder, val_faces: Optional[FaceFolder]):
        self.parts = new_components(cfg.model, cfg.task)
        super().__init__(cfg, accelerator, faces)
        self.groups, self.trainable = full_training_groups(self.parts, cfg.task, cfg.optim, accelerator.device)
        self.valset = val_faces
        self.distribute()

    def compute_loss(self, batch: dict) -> torch.Tensor:
        return vae_loss(self.parts.vae, batch["pixel_values"], batch["generators"], self.cfg.optim.kl_weight).mean()

    def validate(self, ema) -> tuple[dict, np.ndarray]:
        with self.evaluating(ema):
            return validation.reconstructions(self.parts.vae, self.valset, self.cfg.validation.num_identities,
                                              self.cfg.data.resolution, self.cfg.data.face_scale)

    def save(self, output_dir: Path) -> Path:
        standardize_latents(self.parts.vae, (self.batches.batch(k)["pixel_values"] for k in range(4)))
        save_pretrained_atomic(self.parts.vae, output_dir / "vae")
        return output_dir / "vae"


class DiffusionRecipe(Recipe):
    """The denoising loss of a UNet conditioned as the pipeline conditions it; validation renders
    held-out identities and scores them with an independent recogniser."""

    def __init__(self, cfg: TrainConfig, accelerator, faces: FaceFolder, parts: Components, prompt: str = ""):
        self.parts = parts
        self.pipe = build_pipeline(parts, cfg.model.conditioning)
        self.conditioning = Conditioning(self.pipe, cfg.model.conditioning)
        # the conditioning recogniser, frozen and rebuilt from its ONNX file (not checkpointed)
        self.identity = IdentityLoss.from_config(cfg, accelerator.device) if cfg.optim.id_loss_weight else None
        self.id_loss, self.cosines = 0.0, []
        super().__init__(cfg, accelerator, faces, prompt)
        self.prompt = prompt

    def finish(self, val_faces: Optional[FaceFolder]) -> None:
        """Gradient checkpointing and the validation set, once the trained weights exist."""
        cfg = self.cfg
        if cfg.optim.gradient_checkpointing:
            self.parts.unet.enable_gradient_checkpointing()
            if self.trainable.get("text_encoder") is not None:
                self.parts.text_encoder.gradient_checkpointing_enable()
        if val_faces is not None:
            self.evaluator = FaceAnalyzer.from_backend(
                cfg.validation.detector or cfg.data.detector, cfg.validation.recognizer or cfg.data.recognizer,
                det_size=cfg.data.det_size, fallback_box=cfg.validation.fallback_box, upsample=cfg.validation.upsample)
            self.valset = validation.prepare_validation(val_faces, cfg.validation, self.evaluator)

    def compute_loss(self, batch: dict) -> torch.Tensor:
        optim, parts, accum = self.cfg.optim, self.parts, self.cfg.optim.gradient_accumulation_steps
        embeds = self.conditioning(batch, self.device, batch["drop"])
        if self.identity is None:
            per_sample = latent_diffusion_loss(parts.unet, parts.vae, parts.noise_scheduler, batch["pixel_values"],
                                               embeds, batch["generators"], noise_offset=optim.noise_offset,
                                               snr_gamma=optim.snr_gamma)
        else:
            per_sample, term = identity_diffusion_loss(
                self.identity, parts.unet, parts.vae, parts.noise_scheduler, batch["pixel_values"], embeds,
                batch["generators"], batch["id_embeds"], ~batch["drop"], batch["flip"],
                noise_offset=optim.noise_offset, snr_gamma=optim.snr_gamma)
            self.id_loss += self.accelerator.gather(term.loss.detach()).mean().item() / accum
            self.cosines.append(self.accelerator.gather(term.cosine))
        return per_sample.mean()

    def step_metrics(self) -> dict:
        """With the identity loss: its term (in the loss too) and the mean cosine of the examples it
        applied to (``None``: none did)."""
        if self.identity is None:
            return {}
        cosine = torch.cat(self.cosines).nanmean()
        metrics = {"id_loss": self.id_loss, "id_cosine": None if cosine.isnan() else cosine.item()}
        self.id_loss, self.cosines = 0.0, []
        return metrics

    def validate(self, ema) -> tuple[dict, np.ndarray]:
        cfg, per_identity = self.cfg, self.cfg.validation.images_per_identity
        with self.evaluating(ema):
            renders = validation.render(self.pipe, cfg.model.conditioning, self.valset, cfg.validation,
                                        cfg.data.resolution, cfg.seed, self.prompt)
        return (validation.score(renders, self.valset, self.evaluator, per_identity),
                validation.grid(renders, self.valset, per_identity, cfg.data.face_scale))


class LoraRecipe(DiffusionRecipe):
    """``id-adapter`` (identity conditioning) and ``personalize`` (one person, optionally with
    DreamBooth prior preservation): LoRA adapters on the frozen model."""

    def __init__(self, cfg: TrainConfig, accelerator, faces: FaceFolder, val_faces: Optional[FaceFolder]):
        self.learns_identity = cfg.task == "id-adapter"
        parts = load_components(cfg.model).freeze(accelerator.device, cfg.optim.mixed_precision)
        super().__init__(cfg, accelerator, faces, parts,
                         cfg.data.instance_prompt if cfg.task == "personalize" else "")
        self.prior_batches = None
        if cfg.task == "personalize" and cfg.prior.enabled:
            self.prior_batches = self.prior(faces.id_embeds.shape[1])
        self.groups, self.trainable = add_training_lora(parts, cfg.lora, cfg.optim)
        self.finish(val_faces)

    def prior(self, id_dim: int) -> SeededBatches:
        """Batches of prior-preservation images, rendered by the frozen model before any LoRA exists."""
        cfg, accelerator = self.cfg, self.accelerator
        with accelerator.main_process_first(), accelerator.autocast():
            files, ids = prior_images(self.pipe, cfg.model.conditioning, Path(cfg.output_dir) / "prior", cfg.prior,
                                      id_dim=id_dim, class_prompt=cfg.data.class_prompt,
                                      resolution=cfg.data.resolution, seed=cfg.seed)
        prior_set = FaceDataset(files, ids, cfg.data.resolution, cfg.data.class_prompt)
        return SeededBatches(prior_set, cfg.optim.batch_size, cfg.seed + 1, accelerator.num_processes,
                             accelerator.process_index)

    def batch(self, micro_step: int) -> dict:
        batch = super().batch(micro_step)
        batch["prior"] = self.prior_batches.batch(micro_step) if self.prior_batches is not None else None
        return batch

    def compute_loss(self, batch: dict) -> torch.Tensor:
        loss = super().compute_loss(batch)
        prior, optim, parts = batch["prior"], self.cfg.optim, self.parts
        if prior is not None:
            loss = loss + self.cfg.prior.weight * latent_diffusion_loss(
                parts.unet, parts.vae, parts.noise_scheduler, prior["pixel_values"],
                self.conditioning(prior, self.device), prior["generators"], noise_offset=optim.noise_offset,
                snr_gamma=optim.snr_gamma).mean()
        return loss

    def save(self, output_dir: Path) -> Path:
        return save_lora_weights(output_dir, self.parts.unet, self.trainable["text_encoder"])


class IdModelRecipe(DiffusionRecipe):
    """``id-model``: the whole UNet and text encoder of an Arc2Face-style model, new or from
    ``model.init``, on a frozen VAE."""

    learns_identity = True

    def __init__(self, cfg: TrainConfig, accelerator, faces: FaceFolder, val_faces: Optional[FaceFolder]):
        parts = new_components(cfg.model, cfg.task)
        groups, trainable = full_training_groups(parts, cfg.task, cfg.optim, accelerator.device)
        super().__init__(cfg, accelerator, faces, parts)
        self.groups, self.trainable = groups, trainable
        self.finish(val_faces)
        self.distribute()

    def save(self, output_dir: Path) -> Path:
        save_pretrained_atomic(self.pipe, output_dir, index_file="model_index.json")
        return output_dir / "model_index.json"


RECIPES = {"id-adapter": LoraRecipe, "personalize": LoraRecipe, "vae": VaeRecipe, "id-model": IdModelRecipe}


def make_recipe(cfg: TrainConfig, accelerator, faces: FaceFolder, val_faces: Optional[FaceFolder]) -> Recipe:
    """The recipe of ``cfg.task``, its networks built (call after ``set_seed``)."""
    return RECIPES[cfg.task](cfg, accelerator, faces, val_faces)
