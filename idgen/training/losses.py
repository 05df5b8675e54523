"""The denoising objective of latent diffusion, with the two common refinements.

- *Noise offset* (Guttenberg 2023): add a small per-channel constant to the noise so the model
  learns to change an image's mean brightness, which plain Gaussian noise barely teaches.
- *Min-SNR-γ weighting* (Hang et al., ICCV 2023): weight each timestep's loss by
  ``min(SNR, γ) / SNR`` (ε-prediction) or ``min(SNR, γ) / (SNR + 1)`` (v-prediction), so the many
  easy low-noise timesteps stop dominating the gradient; training converges faster.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from .randomness import randint, randn


def sample_noise(latents: torch.Tensor, generators: list[torch.Generator], noise_offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise shaped like ``latents`` (one CPU generator per example, then moved), plus
    ``noise_offset`` × a per-sample, per-channel Gaussian constant."""
    noise = randn(tuple(latents.shape), generators)
    if noise_offset:
        noise += noise_offset * randn(tuple(latents.shape[:2]) + (1, 1), generators)
    return noise.to(latents.device, latents.dtype)


def sample_posterior(posterior, generators: list[torch.Generator]) -> torch.Tensor:
    """A draw from the VAE's diagonal Gaussian posterior, example ``i``'s noise from ``generators[i]``."""
    eps = randn(tuple(posterior.mean.shape), generators).to(posterior.mean.device, posterior.mean.dtype)
    return posterior.mean + posterior.std * eps


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet must predict under the scheduler's parameterisation."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"cannot train a scheduler with prediction_type {kind!r}")


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, scheduler,
                   snr_gamma: Optional[float] = None) -> torch.Tensor:
    """Per-sample mean squared error (shape ``B``), min-SNR-γ weighted when ``snr_gamma`` is set."""
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_sample
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=snr_gamma)
    if scheduler.config.prediction_type == "v_prediction":
        weights = clipped / (snr + 1)
    else:
        weights = clipped / snr
    return per_sample * weights


class DiffusionPrediction(NamedTuple):
    """One batch's noised latents, timesteps, the UNet's prediction and what it should have predicted."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor


def diffusion_prediction(unet, vae, noise_scheduler, pixel_values: torch.Tensor, prompt_embeds: torch.Tensor,
                         generators: list[torch.Generator], *, noise_offset: float = 0.0) -> DiffusionPrediction:
    """Encode to latents (frozen VAE), noise at uniformly drawn timesteps, predict with the UNet.
    Example ``i``'s randomness comes from ``generators[i]`` (CPU generators, see :mod:`.randomness`)."""
    with torch.no_grad():
        posterior = vae.encode(pixel_values.to(vae.device, vae.dtype)).latent_dist
        latents = sample_posterior(posterior, generators) * vae.config.scaling_factor
    noise = sample_noise(latents, generators, noise_offset)
    timesteps = randint(noise_scheduler.config.num_train_timesteps, generators).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, prompt_embeds.to(unet.dtype)).sample
    target = training_target(noise_scheduler, latents, noise, timesteps)
    return DiffusionPrediction(noisy, timesteps, prediction, target)


def latent_diffusion_loss(unet, vae, noise_scheduler, pixel_values: torch.Tensor, prompt_embeds: torch.Tensor,
                          generators: list[torch.Generator], *, noise_offset: float = 0.0,
                          snr_gamma: Optional[float] = None) -> torch.Tensor:
    """Per-sample denoising loss of one batch (:func:`diffusion_prediction`). A step is reproducible on
    any device, independent of anything drawn before it and of how the examples are split into batches."""
    step = diffusion_prediction(unet, vae, noise_scheduler, pixel_values, prompt_embeds, generators,
                                noise_offset=noise_offset)
    return denoising_loss(step.prediction, step.target, step.timesteps, noise_scheduler, snr_gamma)


def vae_loss(vae, pixel_values: torch.Tensor, generators: list[torch.Generator], kl_weight: float) -> torch.Tensor:
    """Per-sample autoencoder loss: L1 between the photo and the decoding of a posterior sample
    (drawn with each example's generator), plus ``kl_weight`` × the KL divergence to N(0, I) per
    latent element. No perceptual term: the ones in use (LPIPS) need downloaded network weights."""
    pixels = pixel_values.to(vae.device)
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(sample_posterior(posterior, generators)).sample
    l1 = (reconstruction.float() - pixels.float()).abs().mean(dim=(1, 2, 3))
    kl = posterior.kl().float() / posterior.mean[0].numel()
    return l1 + kl_weight * kl
