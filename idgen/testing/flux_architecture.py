"""FLUX.1-dev's and InfuseNet's published architectures, for building them without downloading weights.

The dictionaries are the configs of ``black-forest-labs/FLUX.1-dev`` (``transformer/``,
``text_encoder_2/``, ``vae/``) and of InfiniteYou's ``infu_flux_v1.0/<variant>/InfuseNetModel/``
(both variants share it). Built on the meta device they cost no memory, so a test can check that our
code expects exactly the tensors the published checkpoints hold, and ``benchmarks/infiniteyou_memory.py``
can count what each part weighs. Overrides shrink them for CPU tests while keeping their shape.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, FluxControlNetModel, FluxTransformer2DModel
from transformers import T5Config, T5EncoderModel

FLUX_DEV_TRANSFORMER_CONFIG = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}

#: InfuseNet: a Flux ControlNet of 4 double- and 10 single-stream blocks, FLUX.1-dev's widths,
#: embedded guidance, and no condition-image encoder (the keypoint image enters as VAE latents).
INFUSENET_CONFIG = {
    **FLUX_DEV_TRANSFORMER_CONFIG,
    "num_layers": 4,
    "num_single_layers": 10,
    "conditioning_embedding_channels": None,
    "num_mode": None,
}

#: T5 v1.1 XXL's encoder, FLUX's ``text_encoder_2``.
T5_XXL_ENCODER_CONFIG = {
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "is_encoder_decoder": False,
}

#: FLUX's 16-channel autoencoder (no quant convs; shift and scale fixed by the published config).
FLUX_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
}


def flux_dev_transformer(**overrides) -> FluxTransformer2DModel:
    """FLUX.1-dev's transformer (random weights; wrap in ``accelerate.init_empty_weights()`` for meta)."""
    return FluxTransformer2DModel(**{**FLUX_DEV_TRANSFORMER_CONFIG, **overrides})


def infusenet(**overrides) -> FluxControlNetModel:
    """InfiniteYou's InfuseNet (random weights)."""
    return FluxControlNetModel(**{**INFUSENET_CONFIG, **overrides})


def t5_xxl_encoder(**overrides) -> T5EncoderModel:
    """T5-XXL's encoder, its input embedding shared with ``shared`` as in the checkpoint (under
    ``init_empty_weights`` the constructor leaves them as two tensors, and ``tie_weights`` does not help)."""
    model = T5EncoderModel(T5Config(**{**T5_XXL_ENCODER_CONFIG, **overrides}))
    model.encoder.set_input_embeddings(model.shared)
    return model


def flux_vae(**overrides) -> AutoencoderKL:
    return AutoencoderKL(**{**FLUX_VAE_CONFIG, **overrides})
