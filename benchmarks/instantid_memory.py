"""Weight memory of the InstantID-style SDXL pipeline, counted from the real architectures.

Every part is built with its published configuration on PyTorch's meta device (no memory, no
download) and its parameters are counted; bytes = parameters × 2 for fp16 / bf16. Run:

    python benchmarks/instantid_memory.py

This counts weights only. Activations (attention at 1024², the VAE decode) come on top and are
not measured here.
"""

from __future__ import annotations

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

GIB = 1024**3


def sdxl_unet(**overrides) -> UNet2DConditionModel:
    """stabilityai/stable-diffusion-xl-base-1.0 ``unet/config.json`` (``overrides`` replace entries)."""
    return UNet2DConditionModel(**{
        "sample_size": 128, "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
        "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816, **overrides})


def text_encoders(small: dict | None = None, big: dict | None = None) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers, as SDXL ships them (dicts override entries)."""
    small = CLIPTextConfig(**{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                              "num_hidden_layers": 12, "vocab_size": 49408, "max_position_embeddings": 77,
                              "hidden_act": "quick_gelu", **(small or {})})
    big = CLIPTextConfig(**{"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
                            "num_hidden_layers": 32, "vocab_size": 49408, "max_position_embeddings": 77,
                            "hidden_act": "gelu", "projection_dim": 1280, **(big or {})})
    return CLIPTextModel(small), CLIPTextModelWithProjection(big)


def sdxl_vae(**overrides) -> AutoencoderKL:
    return AutoencoderKL(**{"block_out_channels": (128, 256, 512, 512), "in_channels": 3, "out_channels": 3,
                            "latent_channels": 4, "layers_per_block": 2, "down_block_types": ("DownEncoderBlock2D",) * 4,
                            "up_block_types": ("UpDecoderBlock2D",) * 4, **overrides})


def face_adapter_parameters(unet: UNet2DConditionModel) -> int:
    """InstantID's Resampler plus a to_k_ip / to_v_ip pair (2048 → width) per cross-attention layer."""
    resampler = IPAdapterPlusImageProjection(embed_dims=512, output_dims=2048, hidden_dims=1280, heads=20,
                                             num_queries=16)
    ip_layers = sum(2 * 2048 * unet.get_submodule(name[: -len(".processor")]).to_q.out_features
                    for name in unet.attn_processors if name.endswith("attn2.processor"))
    return count(resampler) + ip_layers


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    with init_empty_weights():
        unet = sdxl_unet()
        identitynet = ControlNetModel.from_unet(unet)
        text, text_2 = text_encoders()
        vae = sdxl_vae()
        parts = {"UNet": count(unet), "IdentityNet (ControlNet)": count(identitynet),
                 "text encoder (CLIP-L)": count(text), "text encoder 2 (bigG)": count(text_2),
                 "VAE": count(vae), "face adapter (Resampler + IP layers)": face_adapter_parameters(unet)}
    total = sum(parts.values())
    print(f"{'part':40s} {'parameters':>15s} {'fp16 GiB':>9s}")
    for name, n in parts.items():
        print(f"{name:40s} {n:15,d} {n * 2 / GIB:9.2f}")
    print(f"{'all weights':40s} {total:15,d} {total * 2 / GIB:9.2f}")
    per_step = parts["UNet"] + parts["IdentityNet (ControlNet)"] + parts["face adapter (Resampler + IP layers)"]
    print(f"{'on the GPU while denoising':40s} {per_step:15,d} {per_step * 2 / GIB:9.2f}")


if __name__ == "__main__":
    main()
