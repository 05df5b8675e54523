"""Tiny random SDXL / SD 1.5 parts built in code (the shapes diffusers' own SDXL tests use), a tiny CLIP
vocabulary, and InstantID / FaceID adapter and facexlib IR-SE50 state dicts in their ORIGINAL published
key layouts.

The SDXL and InstantID parts live in the package (:mod:`idgen.testing.tiny_instantid`, behind the
dataset engine's offline preset) and are re-exported here for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTokenizer

from idgen.testing.tiny_instantid import (RESAMPLER, characters_tokenizer, instantid_state_dict,  # noqa: F401
                                            tiny_controlnet, tiny_scheduler, tiny_text_encoder, tiny_vae)
from idgen.testing.tiny_instantid import tiny_sdxl_components as sdxl_components


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """The package's letters-and-digits CLIP tokenizer, round-tripped through its files in ``folder``."""
    characters_tokenizer().save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def tiny_sdxl_components(folder: Path, controlnet=None) -> dict:
    """Everything ``StableDiffusionXLControlNetPipeline`` needs, random but seeded; 64 px images."""
    return sdxl_components(tiny_tokenizer(folder / "tokenizer"), controlnet)


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


def _batch_norm(prefix: str, width: int, tracked: bool = True) -> dict:
    tensors = {f"{prefix}.weight": torch.rand(width) + 0.5, f"{prefix}.bias": torch.randn(width) * 0.1,
               f"{prefix}.running_mean": torch.randn(width) * 0.1, f"{prefix}.running_var": torch.rand(width) + 0.5}
    if tracked:
        tensors[f"{prefix}.num_batches_tracked"] = torch.tensor(7)
    return tensors


def ir_se_state_dict(units, channels, embedding=512, side=7, tracked=True) -> dict:
    """A state dict in the tensor names and shapes of facexlib's ``Backbone(50, 0.6, 'ir_se')`` written
    out from its layer description (not from idgen's module): stem conv + BN + PReLU as
    ``input_layer.0/1/2``; per unit ``res_layer.0`` BN(in), ``.1`` conv 3×3 in→out, ``.2`` PReLU(out), ``.3``
    conv 3×3 out→out, ``.4`` BN(out), ``.5.fc1/.fc2`` SE 1×1 convs through out/16, and where the width
    changes ``shortcut_layer.0`` conv 1×1 + ``.1`` BN; then ``output_layer.0`` BN2d, ``.3`` linear, ``.4`` BN1d."""
    conv = lambda *shape: torch.randn(*shape) * (2.0 / np.prod(shape[1:])) ** 0.5   # noqa: E731
    state = {"input_layer.0.weight": conv(channels[0], 3, 3, 3), **_batch_norm("input_layer.1", channels[0], tracked),
             "input_layer.2.weight": torch.full((channels[0],), 0.25)}
    index, width = 0, channels[0]
    for count, out in zip(units, channels):
        for _ in range(count):
            unit = f"body.{index}"
            if width != out:
                state.update({f"{unit}.shortcut_layer.0.weight": conv(out, width, 1, 1),
                              **_batch_norm(f"{unit}.shortcut_layer.1", out, tracked)})
            state.update({**_batch_norm(f"{unit}.res_layer.0", width, tracked),
                          f"{unit}.res_layer.1.weight": conv(out, width, 3, 3),
                          f"{unit}.res_layer.2.weight": torch.full((out,), 0.25),
                          f"{unit}.res_layer.3.weight": conv(out, out, 3, 3),
                          **_batch_norm(f"{unit}.res_layer.4", out, tracked),
                          f"{unit}.res_layer.5.fc1.weight": conv(out // 16, out, 1, 1),
                          f"{unit}.res_layer.5.fc2.weight": conv(out, out // 16, 1, 1)})
            index, width = index + 1, out
    state.update({**_batch_norm("output_layer.0", width, tracked),
                  "output_layer.3.weight": torch.randn(embedding, width * side * side) / (width * side * side) ** 0.5,
                  "output_layer.3.bias": torch.zeros(embedding), **_batch_norm("output_layer.4", embedding, tracked)})
    return state


#: A small IR-SE in the published layout (112 px in, 512-d out), for the tests.
TINY_IR_SE = {"units": (1, 2, 1, 1), "channels": (16, 32, 48, 64)}
