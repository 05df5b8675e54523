"""Full-size SD 1.5 / Arc2Face architectures, built on the meta device (no memory, no weights):
do they hold exactly the tensors the published checkpoints hold?

The expected numbers are facts about the published files (``stable-diffusion-v1-5`` ``unet/`` and
``text_encoder/``, which Arc2Face's ``arc2face/`` and ``encoder/`` share), written down here
independently of :mod:`idgen.testing.sd15_architecture`.
"""

import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from idgen.testing.sd15_architecture import SD15_TEXT_ENCODER_CONFIG, random_sd15_components
from tiny_sd import TINY_TEXT

UNET_TENSORS, UNET_PARAMETERS = 686, 859_520_964
TEXT_TENSORS, TEXT_PARAMETERS = 196, 123_060_480
VAE_TENSORS, VAE_PARAMETERS = 248, 83_653_863

UNET_SHAPES = {
    "conv_in.weight": (320, 4, 3, 3),
    "time_embedding.linear_1.weight": (1280, 320),
    "time_embedding.linear_2.weight": (1280, 1280),
    # SD 1.5 projects into its transformers with 1×1 convolutions (use_linear_projection=False).
    "down_blocks.0.attentions.0.proj_in.weight": (320, 320, 1, 1),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v.weight": (640, 768),
    "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight": (10240, 1280),  # GEGLU
    "down_blocks.3.resnets.1.conv2.weight": (1280, 1280, 3, 3),
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight": (1280, 1280),
    "up_blocks.0.resnets.0.conv1.weight": (1280, 2560, 3, 3),
    "up_blocks.0.upsamplers.0.conv.weight": (1280, 1280, 3, 3),
    "up_blocks.3.resnets.0.conv1.weight": (320, 960, 3, 3),
    "up_blocks.3.attentions.2.proj_out.weight": (320, 320, 1, 1),
    "conv_norm_out.weight": (320,),
    "conv_out.weight": (4, 320, 3, 3),
}


def published_text_encoder_shapes(layers=12, width=768, mlp=3072, vocab=49408, positions=77):
    """Every tensor of a CLIP text tower as stored in SD 1.5's ``text_encoder/model.safetensors``."""
    shapes = {
        "text_model.embeddings.token_embedding.weight": (vocab, width),
        "text_model.embeddings.position_embedding.weight": (positions, width),
        "text_model.final_layer_norm.weight": (width,),
        "text_model.final_layer_norm.bias": (width,),
    }
    for i in range(layers):
        layer = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}.self_attn.{proj}.weight"] = (width, width)
            shapes[f"{layer}.self_attn.{proj}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}.{norm}.weight"] = (width,)
            shapes[f"{layer}.{norm}.bias"] = (width,)
        shapes[f"{layer}.mlp.fc1.weight"], shapes[f"{layer}.mlp.fc1.bias"] = (mlp, width), (mlp,)
        shapes[f"{layer}.mlp.fc2.weight"], shapes[f"{layer}.mlp.fc2.bias"] = (width, mlp), (width,)
    return shapes


def as_published_text_keys(state_dict):
    """transformers ≥ 5 drops the ``text_model.`` prefix in memory (and maps it back on load)."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": tuple(v.shape) for k, v in state_dict.items()}


@pytest.fixture(scope="module")
def full_size():
    with init_empty_weights():
        return random_sd15_components()


def test_unet_matches_the_published_sd15_unet(full_size):
    unet = full_size["unet"]
    state = unet.state_dict()
    assert unet.device.type == "meta"
    assert len(state) == UNET_TENSORS
    assert sum(t.numel() for t in state.values()) == UNET_PARAMETERS
    for key, shape in UNET_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("down_blocks.3.attentions") for k in state)  # last down block has no attention


def test_text_encoder_matches_the_published_clip_text_tower(full_size):
    state = full_size["text_encoder"].state_dict()
    assert sum(t.numel() for t in state.values()) == TEXT_PARAMETERS
    assert as_published_text_keys(state) == published_text_encoder_shapes()
    assert len(state) == TEXT_TENSORS


def test_vae_matches_the_published_sd15_vae(full_size):
    state = full_size["vae"].state_dict()
    assert len(state) == VAE_TENSORS
    assert sum(t.numel() for t in state.values()) == VAE_PARAMETERS


def test_text_encoder_loads_a_checkpoint_with_published_key_names(tmp_path):
    """The published files name tensors ``text_model.…``; the installed transformers must load them
    into our text encoder completely (here with a tiny config, same naming)."""
    model = CLIPTextModel(CLIPTextConfig(**{**SD15_TEXT_ENCODER_CONFIG, **TINY_TEXT}))
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    published = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in stored.items()}
    save_file(published, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = CLIPTextModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokens = torch.tensor([[49406, 1125, 539, 320, 1014, 2533, 49407] + [49407] * 70])
    with torch.no_grad():
        assert torch.allclose(loaded(tokens)[0], model(tokens)[0], atol=1e-6)
