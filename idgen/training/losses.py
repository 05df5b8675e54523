"""The denoising objective of latent diffusion, with the two common refinements.

- *Noise offset* (Guttenberg 2023): add a small per-channel constant to the noise so the model
  learns to change an image's mean brightness, which plain Gaussian noise barely teaches.
- *Min-SNR-γ weighting* (Hang et al., ICCV 2023): weight each timestep's loss by
  ``min(SNR, γ) / SNR`` (ε-prediction) or ``min(SNR, γ) / (SNR + 1)`` (v-prediction), so the many
  easy low-noise timesteps stop dominating the gradient; training converges faster.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr


def sample_noise(latents: torch.Tensor, generator: torch.Generator, noise_offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise shaped like ``latents`` (drawn on the generator's device, then moved), plus
    ``noise_offset`` × a per-sample, per-channel Gaussian constant."""
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    if noise_offset:
        noise += noise_offset * torch.randn(latents.shape[:2] + (1, 1), generator=generator)
    return noise.to(latents.device, latents.dtype)


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


def latent_diffusion_loss(unet, vae, noise_scheduler, pixel_values: torch.Tensor, prompt_embeds: torch.Tensor,
                          generator: torch.Generator, *, noise_offset: float = 0.0,
                          snr_gamma: Optional[float] = None) -> torch.Tensor:
    """Per-sample denoising loss of one batch: encode to latents (frozen VAE), noise at uniformly drawn
    timesteps, predict with the UNet. All randomness comes from ``generator`` (a CPU generator), so
    a step is reproducible on any device and independent of anything drawn before it."""
    with torch.no_grad():
        posterior = vae.encode(pixel_values.to(vae.device, vae.dtype)).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device, posterior.mean.dtype)
        latents = (posterior.mean + posterior.std * eps) * vae.config.scaling_factor
    noise = sample_noise(latents, generator, noise_offset)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, prompt_embeds.to(unet.dtype)).sample
    return denoising_loss(prediction, training_target(noise_scheduler, latents, noise, timesteps), timesteps,
                          noise_scheduler, snr_gamma)
