"""Tiny random SDXL / SD 1.5 parts built in code (the shapes diffusers' own SDXL tests use), a tiny CLIP
vocabulary, and InstantID / FaceID adapter state dicts in their ORIGINAL published key layouts."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

CROSS_DIM = 64  # two 32-wide text encoders, concatenated
RESAMPLER = dict(dim=32, heads=1, dim_head=64, queries=4, depth=4, ff_mult=4)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run ~10× faster on one thread than on an oversubscribed shared CPU; use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` after importing it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer with a letters-and-digits vocabulary and no merges (one token a char)."""
    chars = list(string.ascii_lowercase + string.digits)
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _unet_kwargs():
    return dict(block_out_channels=(32, 64), layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                projection_class_embeddings_input_dim=80, cross_attention_dim=CROSS_DIM)


def tiny_controlnet(seed: int = 1) -> ControlNetModel:
    """A ControlNet whose zero-initialised output convolutions are randomised, so that (unlike a
    fresh one) its condition and encoder states actually change the UNet's result."""
    torch.manual_seed(seed)
    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 32), **_unet_kwargs())
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


def tiny_sdxl_components(folder: Path, controlnet=None) -> dict:
    """Everything ``StableDiffusionXLControlNetPipeline`` needs, random but seeded; 64 px images."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **_unet_kwargs())
    tokenizer = tiny_tokenizer(folder / "tokenizer")
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
    """An InstantID ``ip-adapter.bin`` payload, original key layout, random values."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, base=0.0):
        return base + 0.3 * torch.randn(*shape, generator=g)

    dim, inner, queries = RESAMPLER["dim"], RESAMPLER["heads"] * RESAMPLER["dim_head"], RESAMPLER["queries"]
    proj = {"latents": rand(1, queries, dim), "proj_in.weight": rand(dim, embedding_dim) / embedding_dim**0.5,
            "proj_in.bias": rand(dim), "proj_out.weight": rand(CROSS_DIM, dim), "proj_out.bias": rand(CROSS_DIM),
            "norm_out.weight": rand(CROSS_DIM, base=1.0), "norm_out.bias": rand(CROSS_DIM)}
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


def tiny_sd15_components(folder: Path) -> dict:
    """A tiny random Stable Diffusion 1.5-shaped pipeline (32-wide text states, 64 px images)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    tokenizer = tiny_tokenizer(folder / "tokenizer")
    return dict(unet=unet, vae=tiny_vae(), text_encoder=tiny_text_encoder(tokenizer), tokenizer=tokenizer,
                scheduler=tiny_scheduler(), safety_checker=None, feature_extractor=None, image_encoder=None,
                requires_safety_checker=False)


def faceid_state_dict(unet, embedding_dim: int, tokens: int = 4, rank: int = 4, seed: int = 0) -> dict:
    """An IP-Adapter FaceID (SD 1.5) payload, original key layout: MLP + LayerNorm projection, IP
    key/value weights on cross-attention layers, and a LoRA on every attention layer."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, base=0.0):
        return base + 0.2 * torch.randn(*shape, generator=g)

    cross = unet.config.cross_attention_dim
    proj = {"proj.0.weight": rand(2 * embedding_dim, embedding_dim), "proj.0.bias": rand(2 * embedding_dim),
            "proj.2.weight": rand(tokens * cross, 2 * embedding_dim), "proj.2.bias": rand(tokens * cross),
            "norm.weight": rand(cross, base=1.0), "norm.bias": rand(cross)}
    ip = {}
    for index, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name[: -len(".processor")])
        width, context = attn.to_q.in_features, attn.to_k.in_features
        for part, fan_in in (("to_q", width), ("to_k", context), ("to_v", context), ("to_out", width)):
            ip[f"{index}.{part}_lora.down.weight"] = rand(rank, fan_in)
            ip[f"{index}.{part}_lora.up.weight"] = rand(width, rank)
        if name.endswith("attn2.processor"):
            ip[f"{index}.to_k_ip.weight"] = rand(width, context)
            ip[f"{index}.to_v_ip.weight"] = rand(width, context)
    return {"image_proj": proj, "ip_adapter": ip}
