"""FLUX.1-dev's transformer and InfiniteYou's InfuseNet, built on the meta device from the published
configs: the parameter counts follow from the layer arithmetic, and the tensors the published
checkpoints hold exist with their shapes."""

import pytest
from accelerate import init_empty_weights

from idgen.testing.flux_architecture import flux_dev_transformer, infusenet

WIDTH, MLP, HEAD = 3072, 4 * 3072, 128


def linear(inputs, outputs):
    return inputs * outputs + outputs


def embedders():
    """Patch and text embedders, then timestep, guidance and pooled-text embedders (two layers each)."""
    return (linear(64, WIDTH) + linear(4096, WIDTH) + 2 * (linear(256, WIDTH) + linear(WIDTH, WIDTH))
            + linear(768, WIDTH) + linear(WIDTH, WIDTH))


def double_block():
    """Two AdaLN-Zero modulations (6 vectors each), q/k/v and output for image and text, RMS q/k norms
    for both streams, and a GELU MLP for each stream."""
    return (2 * linear(WIDTH, 6 * WIDTH) + 8 * linear(WIDTH, WIDTH) + 4 * HEAD
            + 2 * (linear(WIDTH, MLP) + linear(MLP, WIDTH)))


def single_block():
    """One modulation (3 vectors), q/k/v with RMS norms, the parallel MLP input and a joint output."""
    return linear(WIDTH, 3 * WIDTH) + 3 * linear(WIDTH, WIDTH) + 2 * HEAD + linear(WIDTH, MLP) + linear(WIDTH + MLP, WIDTH)


@pytest.fixture(scope="module")
def models():
    with init_empty_weights():
        return flux_dev_transformer(), infusenet()


def test_parameter_counts_follow_from_the_layers(models):
    transformer, controlnet = models
    expected = embedders() + 19 * double_block() + 38 * single_block() + linear(WIDTH, 2 * WIDTH) + linear(WIDTH, 64)
    assert sum(p.numel() for p in transformer.parameters()) == expected == 11_901_408_320  # FLUX.1-dev's 11.9 B
    residual_outputs = (4 + 10) * linear(WIDTH, WIDTH)  # one zero-initialised projection per block
    expected = embedders() + 4 * double_block() + 10 * single_block() + residual_outputs + linear(64, WIDTH)
    assert sum(p.numel() for p in controlnet.parameters()) == expected
    # infusenet_sim_bf16.safetensors is 5.91 GB: two bytes per parameter
    assert expected * 2 == pytest.approx(5.91e9, rel=0.002)


@pytest.mark.parametrize("name, shape", [
    ("x_embedder.weight", (WIDTH, 64)),
    ("context_embedder.weight", (WIDTH, 4096)),
    ("time_text_embed.guidance_embedder.linear_1.weight", (WIDTH, 256)),
    ("time_text_embed.text_embedder.linear_1.weight", (WIDTH, 768)),
    ("transformer_blocks.18.attn.add_k_proj.weight", (WIDTH, WIDTH)),
    ("transformer_blocks.18.attn.norm_added_q.weight", (HEAD,)),
    ("transformer_blocks.0.norm1_context.linear.weight", (6 * WIDTH, WIDTH)),
    ("transformer_blocks.0.ff_context.net.0.proj.weight", (MLP, WIDTH)),
    ("single_transformer_blocks.37.proj_out.weight", (WIDTH, WIDTH + MLP)),
    ("single_transformer_blocks.37.proj_mlp.weight", (MLP, WIDTH)),
    ("norm_out.linear.weight", (2 * WIDTH, WIDTH)),
    ("proj_out.weight", (64, WIDTH)),
])
def test_transformer_tensors_have_the_published_names_and_shapes(models, name, shape):
    assert tuple(models[0].state_dict()[name].shape) == shape


@pytest.mark.parametrize("name, shape", [
    ("controlnet_x_embedder.weight", (WIDTH, 64)),
    ("controlnet_blocks.3.weight", (WIDTH, WIDTH)),
    ("controlnet_single_blocks.9.weight", (WIDTH, WIDTH)),
    ("transformer_blocks.3.attn.to_add_out.weight", (WIDTH, WIDTH)),
    ("single_transformer_blocks.9.proj_out.weight", (WIDTH, WIDTH + MLP)),
    ("time_text_embed.guidance_embedder.linear_2.weight", (WIDTH, WIDTH)),
])
def test_infusenet_tensors_have_the_published_names_and_shapes(models, name, shape):
    state = models[1].state_dict()
    assert tuple(state[name].shape) == shape
    assert "transformer_blocks.4.attn.to_q.weight" not in state and "single_transformer_blocks.10.norm.linear.weight" not in state
    assert "controlnet_mode_embedder.weight" not in state and "input_hint_block.0.weight" not in state
