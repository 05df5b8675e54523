"""An identity loss for ``id-model`` training, as PuLID and InfiniteYou train with: the conditioning
recogniser, run in torch with gradients, scores the face the UNet's prediction implies.

    loss = denoising loss + λ · (1 − cos(MobileFaceNet(aligned(decode(x̂0))), identity vector))

- **x̂0**: the clean latents the prediction at timestep *t* implies (the scheduler's ``alphas_cumprod``;
  ε-, v- or sample-prediction). Only examples with *t* below ``max_timestep`` take part (at high noise
  x̂0 is a blur that says nothing about identity), and none whose identity was dropped for guidance.
- **decode**: the frozen VAE, back to the training crop.
- **aligned**: a training crop puts the five landmarks on the ArcFace template shrunk by ``face_scale``
  about its centre (:func:`idgen.faces.face_template`); the recogniser's 112×112 crop puts the same
  landmarks on the template itself. Both are similarity transforms of the photo, so the recogniser's
  crop is a fixed scale and shift of the training crop: one ``grid_sample`` (:func:`recognizer_grid`).
  Mirrored training crops are mirrored back first.
- **MobileFaceNet**: the ONNX recogniser the identity vectors came from, loaded into torch by
  :func:`idgen.models.mobilefacenet.from_onnx`, frozen, with the ImageNet normalisation of
  :meth:`idgen.faces.OnnxRecognizer.mobilefacenet`, and flip-summed when the vectors are.
- **identity vector**: each example's own conditioning vector (the cosine ignores its length).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..faces import face_template, similarity_transform
from ..faces.model_files import MOBILEFACENET_ONNX
from ..faces.recognizers import NORMALIZATIONS
from ..models.mobilefacenet import from_onnx
from .losses import denoising_loss, diffusion_prediction


def predicted_original(scheduler, noisy: torch.Tensor, prediction: torch.Tensor,
                       timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latents x̂0 that ``prediction`` at ``timesteps`` implies for ``noisy``, under the
    scheduler's ``prediction_type`` (``epsilon``, ``v_prediction`` or ``sample``)."""
    alpha = scheduler.alphas_cumprod.to(noisy.device, torch.float32)[timesteps].view(-1, 1, 1, 1)
    signal, sigma = alpha.sqrt(), (1 - alpha).sqrt()
    kind = scheduler.config.prediction_type
    noisy, prediction = noisy.float(), prediction.float()
    if kind == "epsilon":
        return (noisy - sigma * prediction) / signal
    if kind == "v_prediction":
        return signal * noisy - sigma * prediction
    if kind == "sample":
        return prediction
    raise ValueError(f"cannot recover x0 for prediction_type {kind!r}")


def recognizer_grid(resolution: int, face_scale: float, size: int = 112) -> torch.Tensor:
    """The 2×3 ``F.affine_grid`` matrix (``align_corners=False``) that samples, from a
    ``resolution``-pixel training crop framed by ``face_scale``, the recogniser's ``size``×``size``
    aligned crop of the same face (what :func:`idgen.faces.align_face` cuts from the photo)."""
    crop_from_recognizer = np.vstack([similarity_transform(face_template(size), face_template(resolution, face_scale)),
                                      [0.0, 0.0, 1.0]])
    # pixel coordinates (centres at integers, as cv2 and the templates use) <-> grid coordinates in [-1, 1]
    from_grid = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
    to_grid = np.array([[2 / resolution, 0, 1 / resolution - 1], [0, 2 / resolution, 1 / resolution - 1], [0, 0, 1]])
    return torch.tensor((to_grid @ crop_from_recognizer @ from_grid)[:2], dtype=torch.float32)


def onnx_file(recognizer: str) -> str:
    """The ONNX file of a ``data.recognizer`` setting naming MobileFaceNet (the only ones
    :meth:`TrainConfig.load <idgen.training.TrainConfig.load>` accepts with the identity loss on): ``mobilefacenet``, the
    shipped copy, or ``mobilefacenet:PATH``."""
    return str(MOBILEFACENET_ONNX) if recognizer == "mobilefacenet" else recognizer.split(":", 1)[1]


class IdentityTerm(NamedTuple):
    """Per example: ``loss``, λ·(1 − cos) or 0 where the example takes no part (differentiable), and
    ``cosine``, the cosine where it takes part and NaN elsewhere (detached, for the log)."""

    loss: torch.Tensor
    cosine: torch.Tensor


class IdentityLoss:
    """The identity term of :mod:`this module <idgen.training.identity_loss>` for training crops of
    ``resolution`` pixels framed by ``face_scale``; ``flip``: the identity vectors are flip-summed."""

    def __init__(self, recognizer: torch.nn.Module, resolution: int, face_scale: float, *, weight: float,
                 max_timestep: int, flip: bool, device="cpu"):
        self.recognizer = recognizer.eval().requires_grad_(False).to(device)
        self.weight, self.max_timestep, self.flip = weight, max_timestep, flip
        self.size = recognizer.config["resolution"]
        self.theta = recognizer_grid(resolution, face_scale, self.size).to(device)
        mean, std = NORMALIZATIONS["imagenet"]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) / 127.5 - 1.0   # on the [-1, 1] scale
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) / 127.5

    @classmethod
    def from_config(cls, cfg, device="cpu") -> "IdentityLoss":
        """The identity loss a training config asks for (``optim.id_loss_*``, ``data.*``)."""
        return cls(from_onnx(onnx_file(cfg.data.recognizer)), cfg.data.resolution, cfg.data.face_scale,
                   weight=cfg.optim.id_loss_weight, max_timestep=cfg.optim.id_loss_max_timestep,
                   flip=cfg.data.recognizer_flip, device=device)

    def aligned(self, images: torch.Tensor) -> torch.Tensor:
        """Training crops (N×3×R×R in [-1, 1]) -> the recogniser's aligned crops, normalised as it takes them."""
        grid = F.affine_grid(self.theta.expand(len(images), 2, 3), [len(images), 3, self.size, self.size],
                             align_corners=False)
        crops = F.grid_sample(images.float().clamp(-1, 1), grid, mode="bilinear", padding_mode="border",
                              align_corners=False)
        return (crops - self.mean) / self.std

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Training crops (N×3×R×R in [-1, 1]) -> raw embeddings (N×D), flip-summed when ``flip``."""
        crops = self.aligned(images)
        if not self.flip:
            return self.recognizer(crops)
        return self.recognizer(torch.cat([crops, crops.flip(-1)])).view(2, len(images), -1).sum(0)

    def __call__(self, vae, scheduler, noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor,
                 targets: torch.Tensor, keep: torch.Tensor, mirrored: torch.Tensor) -> IdentityTerm:
        """The term for a batch: examples with ``keep`` (identity not dropped) and a timestep below
        ``max_timestep`` take part; ``mirrored`` examples are mirrored back before the recogniser."""
        active = torch.nonzero(keep.to(timesteps.device) & (timesteps < self.max_timestep)).flatten()
        loss = torch.zeros(len(timesteps), device=timesteps.device)
        cosine = torch.full((len(timesteps),), float("nan"), device=timesteps.device)
        if len(active) == 0:
            return IdentityTerm(loss, cosine)
        latents = predicted_original(scheduler, noisy[active], prediction[active], timesteps[active])
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        images = torch.where(mirrored.to(images.device)[active, None, None, None], images.flip(-1), images)
        similarity = F.cosine_similarity(self.embed(images).float(), targets[active].to(images.device).float(), dim=-1)
        return IdentityTerm(loss.index_copy(0, active, self.weight * (1 - similarity)),
                            cosine.index_copy(0, active, similarity.detach()))


def identity_diffusion_loss(identity: IdentityLoss, unet, vae, noise_scheduler, pixel_values: torch.Tensor,
                            prompt_embeds: torch.Tensor, generators: list[torch.Generator], id_embeds: torch.Tensor,
                            keep: torch.Tensor, mirrored: torch.Tensor, *, noise_offset: float = 0.0,
                            snr_gamma: Optional[float] = None) -> tuple[torch.Tensor, IdentityTerm]:
    """:func:`~idgen.training.latent_diffusion_loss` (the same draws, the same per-example losses) plus
    the identity term of each example: ``(per-example total, the term)``."""
    step = diffusion_prediction(unet, vae, noise_scheduler, pixel_values, prompt_embeds, generators,
                                noise_offset=noise_offset)
    per_sample = denoising_loss(step.prediction, step.target, step.timesteps, noise_scheduler, snr_gamma)
    term = identity(vae, noise_scheduler, step.noisy, step.prediction, step.timesteps, id_embeds, keep, mirrored)
    return per_sample + term.loss.to(per_sample.device), term
