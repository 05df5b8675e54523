"""A tiny random Arc2Face pipeline (``--tiny``, the tests): every tab runs offline in seconds, producing noise.

Nothing here is trained. The pipeline has Stable Diffusion 1.5's architecture shrunk to
two 32/64-wide blocks and a 128-wide text encoder (so dlib's 128-d embeddings fit), and a CLIP BPE
tokenizer that knows only the letters and the words of the Arc2Face prompt. Its InstantID
counterpart is :mod:`idgen.testing.tiny_instantid`. The demo page says "tiny random models" in its
title whenever these are in use.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import ControlNetModel
from transformers import CLIPTokenizer

from ..io import save_safetensors_atomic
from ..pipelines import Arc2FacePipeline
from ..faces.expression import EXPRESSION_SIZE
from ..pipelines.arc2face_adapters import CONTROLNET_FOLDER, EXPRESSION_ADAPTER, REFERENCE_ADAPTER
from ..pipelines.pipeline_arc2face import ARC2FACE_PROMPT
from .sd15_architecture import random_sd15_components
from .tiny_instantid import _cross_attention_layers

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
    pipe = Arc2FacePipeline(**parts, tokenizer=letters_tokenizer(), safety_checker=None, feature_extractor=None,
                            image_encoder=None, requires_safety_checker=False)
    pipe.face_backends = None   # random weights: trained on no recogniser
    return pipe



# ---------------------------------------------------------------- the published extensions
def expression_adapter_state_dict(unet, seed: int = 0) -> dict:
    """An ``exp_adapter/exp_adapter.bin`` payload, random: IP-Adapter's layout, with the FLAME
    parameters (55) as its "image embeds": ``image_proj`` a linear map to 4 tokens plus a layer norm,
    ``ip_adapter`` the ``to_k_ip`` / ``to_v_ip`` of each cross-attention layer."""
    g = torch.Generator().manual_seed(seed)
    width, tokens = unet.config.cross_attention_dim, 4
    proj = {"proj.weight": 0.3 * torch.randn(tokens * width, EXPRESSION_SIZE, generator=g),
            "proj.bias": 0.1 * torch.randn(tokens * width, generator=g),
            "norm.weight": 1 + 0.1 * torch.randn(width, generator=g), "norm.bias": 0.1 * torch.randn(width, generator=g)}
    ip = {f"{index}.{name}.weight": 0.3 * torch.randn(attn.to_k.weight.shape, generator=g)
          for index, attn in _cross_attention_layers(unet) for name in ("to_k_ip", "to_v_ip")}
    return {"image_proj": proj, "ip_adapter": ip}


def reference_lora_state_dict(unet, rank: int = 4, seed: int = 0) -> dict:
    """A ``ref_adapter/pytorch_lora_weights.safetensors`` payload, random: the layout diffusers'
    LoRA training scripts save (``unet.<layer>.lora.down/up.weight``) on every attention projection."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0") \
                and ".attn" in name:
            state[f"unet.{name}.lora.down.weight"] = 0.3 * torch.randn(rank, module.in_features, generator=g)
            state[f"unet.{name}.lora.up.weight"] = 0.3 * torch.randn(module.out_features, rank, generator=g)
    return state


def tiny_arc2face_controlnet(unet, seed: int = 0) -> ControlNetModel:
    """A ControlNet built from ``unet`` (as Arc2Face's was) whose zero-initialised convolutions are
    randomised, so its condition image changes the result; it downsamples the condition as the tiny
    VAE does (2×)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        with torch.no_grad():
            for parameter in controlnet.parameters():
                if not parameter.any():
                    parameter.normal_(0.0, 0.5)
    return controlnet


def write_arc2face_extensions(folder: str | os.PathLike, unet, seed: int = 0) -> Path:
    """Write random ``controlnet/``, ``exp_adapter/exp_adapter.bin`` and
    ``ref_adapter/pytorch_lora_weights.safetensors`` for ``unet`` into ``folder``, in the file layout
    and names of ``FoivosPar/Arc2Face``; returns ``folder``."""
    folder = Path(folder)
    tiny_arc2face_controlnet(unet, seed).save_pretrained(folder / CONTROLNET_FOLDER)
    for subfolder in (EXPRESSION_ADAPTER[0], REFERENCE_ADAPTER[0]):
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
    torch.save(expression_adapter_state_dict(unet, seed), folder / EXPRESSION_ADAPTER[0] / EXPRESSION_ADAPTER[1])
    save_safetensors_atomic(reference_lora_state_dict(unet, seed=seed), folder / REFERENCE_ADAPTER[0] / REFERENCE_ADAPTER[1])
    return folder
