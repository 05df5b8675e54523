"""Tiny random models for ``--tiny``: every tab runs offline in seconds, producing noise.

Nothing here is trained. The Arc2Face pipeline has Stable Diffusion 1.5's architecture shrunk to
two 32/64-wide blocks and a 128-wide text encoder (so dlib's 128-d embeddings fit), and a CLIP BPE
tokenizer that knows only the letters and the words of the Arc2Face prompt. The InstantID pipeline
is SDXL shrunk the same way (the shapes diffusers' own SDXL tests use: two 32-wide text encoders,
64-pixel images) with a random IdentityNet and a random face adapter in InstantID's published
``ip-adapter.bin`` layout, taking dlib's 128-d embeddings. The page says "tiny random models" in
its title whenever these are in use.
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..pipelines import Arc2FacePipeline, InstantIDPipeline
from ..pipelines.pipeline_arc2face import ARC2FACE_PROMPT
from ..pipelines.sd15_architecture import random_sd15_components

TEXT_WIDTH = 128
IMAGE_SIZE = 32  # the VAE downsamples twice → 16×16 latents

TINY_UNET = {"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
             "cross_attention_dim": TEXT_WIDTH, "sample_size": IMAGE_SIZE // 2}
TINY_VAE = {"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "sample_size": IMAGE_SIZE}
TINY_TEXT = {"hidden_size": TEXT_WIDTH, "intermediate_size": 256, "num_attention_heads": 4,
             "num_hidden_layers": 2, "projection_dim": TEXT_WIDTH}


def letters_tokenizer(words=tuple(ARC2FACE_PROMPT.split())) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over the 26 letters plus one merge chain per word of ``words``, so each
    of those words is a single token (Arc2Face needs ``id`` to be one) and any other text still
    tokenises letter by letter."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_arc2face(seed: int = 0) -> Arc2FacePipeline:
    """A randomly initialised Arc2Face pipeline making 32×32 images from 128-d identities."""
    with torch.random.fork_rng():
        parts = random_sd15_components(unet=TINY_UNET, vae=TINY_VAE, text_encoder=TINY_TEXT, seed=seed)
    return Arc2FacePipeline(**parts, tokenizer=letters_tokenizer(), safety_checker=None, feature_extractor=None,
                            image_encoder=None, requires_safety_checker=False)


# ---------------------------------------------------------------------------- InstantID (SDXL)
SDXL_CROSS_DIM = 64  # two 32-wide text encoders, concatenated
#: The face adapter's Perceiver Resampler (InstantID's has dim 1280, 20 heads of 64, 16 queries).
RESAMPLER = dict(dim=32, heads=1, dim_head=64, queries=4, depth=4, ff_mult=4)


def _sdxl_unet_kwargs() -> dict:
    return dict(block_out_channels=(32, 64), layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                projection_class_embeddings_input_dim=80, cross_attention_dim=SDXL_CROSS_DIM)


def tiny_controlnet(seed: int = 1) -> ControlNetModel:
    """An IdentityNet-shaped ControlNet whose zero-initialised output convolutions are randomised, so
    that (unlike a fresh one) its condition and face tokens actually change the UNet's result."""
    torch.manual_seed(seed)
    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 32), **_sdxl_unet_kwargs())
    with torch.no_grad():
        for parameter in controlnet.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    return controlnet


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)


def tiny_text_encoder(tokenizer: CLIPTokenizer, cls=CLIPTextModel):
    config = CLIPTextConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
                            hidden_act="gelu", projection_dim=32, max_position_embeddings=77)
    torch.manual_seed(0)
    return cls(config)


def tiny_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                  beta_schedule="scaled_linear", timestep_spacing="leading")


def tiny_sdxl_components(tokenizer: Optional[CLIPTokenizer] = None, controlnet=None) -> dict:
    """Everything ``StableDiffusionXLControlNetPipeline`` needs, random but seeded; 64 px images."""
    tokenizer = tokenizer or letters_tokenizer(words=())
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **_sdxl_unet_kwargs())
    return dict(unet=unet, vae=tiny_vae(), text_encoder=tiny_text_encoder(tokenizer),
                text_encoder_2=tiny_text_encoder(tokenizer, CLIPTextModelWithProjection),
                tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=tiny_scheduler(),
                controlnet=controlnet if controlnet is not None else tiny_controlnet(),
                add_watermarker=False)


def _cross_attention_layers(unet):
    """(original key index, attention module) of every cross-attention layer; the index counts all
    attention processors in ``unet.attn_processors`` order, as the original IP-Adapter code does."""
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            yield index, unet.get_submodule(name[: -len(".processor")])


def instantid_state_dict(unet, embedding_dim: int, seed: int = 0) -> dict:
    """An InstantID ``ip-adapter.bin`` payload for ``unet``, original key layout, random values."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, base=0.0):
        return base + 0.3 * torch.randn(*shape, generator=g)

    dim, inner, queries = RESAMPLER["dim"], RESAMPLER["heads"] * RESAMPLER["dim_head"], RESAMPLER["queries"]
    proj = {"latents": rand(1, queries, dim), "proj_in.weight": rand(dim, embedding_dim) / embedding_dim**0.5,
            "proj_in.bias": rand(dim), "proj_out.weight": rand(SDXL_CROSS_DIM, dim), "proj_out.bias": rand(SDXL_CROSS_DIM),
            "norm_out.weight": rand(SDXL_CROSS_DIM, base=1.0), "norm_out.bias": rand(SDXL_CROSS_DIM)}
    for i in range(RESAMPLER["depth"]):
        p = f"layers.{i}."
        proj.update({
            p + "0.norm1.weight": rand(dim, base=1.0), p + "0.norm1.bias": rand(dim),
            p + "0.norm2.weight": rand(dim, base=1.0), p + "0.norm2.bias": rand(dim),
            p + "0.to_q.weight": rand(inner, dim), p + "0.to_kv.weight": rand(2 * inner, dim),
            p + "0.to_out.weight": rand(dim, inner) / 4,
            p + "1.0.weight": rand(dim, base=1.0), p + "1.0.bias": rand(dim),
            p + "1.1.weight": rand(dim * RESAMPLER["ff_mult"], dim), p + "1.3.weight": rand(dim, dim * RESAMPLER["ff_mult"]) / 4,
        })
    ip = {}
    for index, attn in _cross_attention_layers(unet):
        for name in ("to_k_ip", "to_v_ip"):
            ip[f"{index}.{name}.weight"] = rand(*attn.to_k.weight.shape)
    return {"image_proj": proj, "ip_adapter": ip}


def tiny_instantid(embedding_dim: int = TEXT_WIDTH) -> InstantIDPipeline:
    """A randomly initialised InstantID pipeline making 64×64 images from ``embedding_dim``-d raw
    face embeddings (128: dlib's) and the five keypoints."""
    with torch.random.fork_rng():
        pipe = InstantIDPipeline(**tiny_sdxl_components())
        pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, embedding_dim))
    return pipe
