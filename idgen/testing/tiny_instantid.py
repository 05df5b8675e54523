"""A tiny, randomly initialised InstantID pipeline: SDXL's architecture shrunk to run on a CPU in seconds.

Nothing here is trained; it draws noise, not faces. It exists so that everything that drives an
InstantID pipeline (the dataset engine's ``generator.type: instantid-tiny`` preset, the tests) runs
offline. The shapes are those diffusers' own SDXL tests use (two 32/64-wide blocks, two 32-wide text
encoders, 64 px images). The face adapter is a state dict in InstantID's published ``ip-adapter.bin``
layout, loaded through :meth:`InstantIDMixin.load_instantid_adapter` exactly as a real checkpoint is,
and the IdentityNet's zero-initialised output convolutions are randomised so the pose image and the
face tokens really change the result.
"""

from __future__ import annotations

import string
from typing import Optional

import torch
from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..pipelines import InstantIDPipeline

CROSS_DIM = 64  # two 32-wide text encoders, concatenated
#: The face Resampler of the tiny adapter (InstantID's: dim 1280, 20 heads, 16 queries).
RESAMPLER = dict(dim=32, heads=1, dim_head=64, queries=4, depth=4, ff_mult=4)


def characters_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary is the lower-case letters and digits, one token per
    character (no merges), so any prompt tokenises without a downloaded vocabulary."""
    chars = list(string.ascii_lowercase + string.digits)
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _unet_kwargs() -> dict:
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


def tiny_sdxl_components(tokenizer: Optional[CLIPTokenizer] = None, controlnet=None) -> dict:
    """Everything ``StableDiffusionXLControlNetPipeline`` needs, random but seeded; 64 px images."""
    tokenizer = tokenizer or characters_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **_unet_kwargs())
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


def original_resampler_state_dict(embedding_dim: int, output_dim: int, *, dim: int, heads: int, dim_head: int,
                                  queries: int, depth: int, ff_mult: int, generator: torch.Generator) -> dict:
    """Random tensors in the original IP-Adapter Plus Resampler layout (``layers.i.0.to_kv`` …), which
    InstantID's ``ip-adapter.bin`` and InfiniteYou's ``image_proj_model.bin`` both use."""

    def rand(*shape, base=0.0):
        return base + 0.3 * torch.randn(*shape, generator=generator)

    inner = heads * dim_head
    proj = {"latents": rand(1, queries, dim), "proj_in.weight": rand(dim, embedding_dim) / embedding_dim**0.5,
            "proj_in.bias": rand(dim), "proj_out.weight": rand(output_dim, dim), "proj_out.bias": rand(output_dim),
            "norm_out.weight": rand(output_dim, base=1.0), "norm_out.bias": rand(output_dim)}
    for i in range(depth):
        p = f"layers.{i}."
        proj.update({
            p + "0.norm1.weight": rand(dim, base=1.0), p + "0.norm1.bias": rand(dim),
            p + "0.norm2.weight": rand(dim, base=1.0), p + "0.norm2.bias": rand(dim),
            p + "0.to_q.weight": rand(inner, dim), p + "0.to_kv.weight": rand(2 * inner, dim),
            p + "0.to_out.weight": rand(dim, inner) / 4,
            p + "1.0.weight": rand(dim, base=1.0), p + "1.0.bias": rand(dim),
            p + "1.1.weight": rand(dim * ff_mult, dim), p + "1.3.weight": rand(dim, dim * ff_mult) / 4,
        })
    return proj


def instantid_state_dict(unet, embedding_dim: int, seed: int = 0) -> dict:
    """An InstantID ``ip-adapter.bin`` payload, original key layout, random values."""
    g = torch.Generator().manual_seed(seed)
    proj = original_resampler_state_dict(embedding_dim, CROSS_DIM, dim=RESAMPLER["dim"], heads=RESAMPLER["heads"],
                                         dim_head=RESAMPLER["dim_head"], queries=RESAMPLER["queries"],
                                         depth=RESAMPLER["depth"], ff_mult=RESAMPLER["ff_mult"], generator=g)
    ip = {}
    for index, attn in _cross_attention_layers(unet):
        for name in ("to_k_ip", "to_v_ip"):
            ip[f"{index}.{name}.weight"] = 0.3 * torch.randn(*attn.to_k.weight.shape, generator=g)
    return {"image_proj": proj, "ip_adapter": ip}


def tiny_instantid(embedding_dim: int = 512, seed: int = 0):
    """A ready InstantID pipeline (64 px images) whose face adapter takes ``embedding_dim``-d
    embeddings; weights depend only on ``seed``, and the global RNG is left as it was."""

    with torch.random.fork_rng():
        pipe = InstantIDPipeline(**tiny_sdxl_components(controlnet=tiny_controlnet(seed + 1)))
        pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, embedding_dim, seed=seed))
    pipe.set_progress_bar_config(disable=True)
    pipe.face_backends = None   # random weights: trained on no recogniser
    return pipe
