"""Stable Diffusion 1.5's published architecture, for building it without downloading weights.

The dictionaries are the configs of ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (``unet/``,
``text_encoder/``, ``vae/``, ``scheduler/``); Arc2Face's ``arc2face/`` UNet and ``encoder/`` text
encoder share them. Building models from them with random weights gives full-size speed and memory
measurements on machines that cannot download checkpoints, and — on the meta device — a check that
our code expects exactly the tensors the published checkpoints hold. Overrides shrink the
architecture for CPU tests and benchmarks while keeping its shape.
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

SD15_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: CLIP ViT-L/14's text tower as SD 1.5 ships it (legacy bos/eos ids 0/2 included).
SD15_TEXT_ENCODER_CONFIG = {
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

SD15_VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}

#: SD 1.5's ``scheduler/scheduler_config.json`` (a PNDM config; other schedulers read it via from_config).
SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def random_sd15_components(*, unet: Optional[dict] = None, vae: Optional[dict] = None,
                           text_encoder: Optional[dict] = None, seed: int = 0) -> dict:
    """Randomly initialised ``unet``, ``vae``, ``text_encoder`` and a DPM-Solver++ ``scheduler``
    with SD 1.5's architecture; each dict overrides entries of the matching config (e.g.
    ``unet={"block_out_channels": [32, 64, 64, 64]}``). Wrap in ``accelerate.init_empty_weights()``
    to build on the meta device without allocating memory."""
    torch.manual_seed(seed)
    return {
        "unet": UNet2DConditionModel(**{**SD15_UNET_CONFIG, **(unet or {})}),
        "vae": AutoencoderKL(**{**SD15_VAE_CONFIG, **(vae or {})}),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**{**SD15_TEXT_ENCODER_CONFIG, **(text_encoder or {})})),
        "scheduler": DPMSolverMultistepScheduler.from_config(SD15_SCHEDULER_CONFIG),
    }
