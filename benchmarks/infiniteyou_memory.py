"""Weight memory of the InfiniteYou-style FLUX pipeline, counted from the real architectures.

Every part is built with its published configuration on PyTorch's meta device (no memory, no
download) and its parameters are counted. bf16 = 2 bytes per parameter. The NF4 column is an
estimate of bitsandbytes 4-bit loading (diffusers' ``BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4")``): Linear weights at 4.5 bits (4-bit codes + one fp32 scale per block
of 64; double quantisation saves a little more), everything else kept in bf16. Run:

    python benchmarks/infiniteyou_memory.py

Weights only: activations (joint attention over 4,096 image + 512 text tokens at 1024²) come on
top and are not measured here.
"""

from __future__ import annotations

import torch
from accelerate import init_empty_weights
from transformers import CLIPTextConfig, CLIPTextModel

from idgen.pipelines import InfiniteYouProjection
from idgen.testing.flux_architecture import flux_dev_transformer, flux_vae, infusenet, t5_xxl_encoder

GIB = 1024**3


def bytes_bf16_and_nf4(module: torch.nn.Module) -> tuple[int, int, float]:
    """(parameters, bf16 bytes, estimated NF4 bytes)."""
    total = sum(p.numel() for p in module.parameters())
    linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    return total, 2 * total, 2 * (total - linear) + linear * 4.5 / 8


def main() -> None:
    with init_empty_weights():
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                            num_hidden_layers=12, vocab_size=49408, max_position_embeddings=77,
                                            hidden_act="quick_gelu", projection_dim=768))
        parts = {"FLUX.1-dev transformer": flux_dev_transformer(), "InfuseNet (Flux ControlNet)": infusenet(),
                 "text encoder 2 (T5-XXL encoder)": t5_xxl_encoder(), "text encoder (CLIP-L)": clip,
                 "VAE": flux_vae(), "identity projection (Resampler)": InfiniteYouProjection()}
        rows = {name: bytes_bf16_and_nf4(module) for name, module in parts.items()}
    print(f"{'part':34s} {'parameters':>15s} {'bf16 GiB':>9s} {'NF4 GiB (est.)':>15s}")
    for name, (n, bf16, nf4) in rows.items():
        print(f"{name:34s} {n:15,d} {bf16 / GIB:9.2f} {nf4 / GIB:15.2f}")
    total = [sum(column) for column in zip(*rows.values())]
    print(f"{'all weights':34s} {total[0]:15,d} {total[1] / GIB:9.2f} {total[2] / GIB:15.2f}")
    denoising = [rows[k] for k in ("FLUX.1-dev transformer", "InfuseNet (Flux ControlNet)")]
    n, bf16, nf4 = (sum(column) for column in zip(*denoising))
    print(f"{'on the GPU while denoising':34s} {n:15,d} {bf16 / GIB:9.2f} {nf4 / GIB:15.2f}")


if __name__ == "__main__":
    main()
