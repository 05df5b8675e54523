"""A tiny, randomly initialised InfiniteYou pipeline: FLUX's architecture shrunk to run on a CPU in seconds.

Nothing here is trained; it draws noise, not faces. The shapes follow diffusers' own Flux ControlNet
tests (one double- and one single-stream block of 2 heads × 16, 32-wide text states), with a
two-block VAE so that the 32 px keypoint image survives the 2× latent packing. The tokenizers are
built in code (a character-level T5 and CLIP vocabulary), so nothing is downloaded. The identity
projection is a state dict in the published ``image_proj_model.bin`` layout, loaded through
:meth:`InfiniteYouProjection.from_original_state_dict` exactly as a real checkpoint is, and
InfuseNet's zero-initialised output layers are randomised so the identity really changes the result.
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxControlNetModel, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

from ..pipelines import InfiniteYouPipeline, InfiniteYouProjection
from .tiny_instantid import characters_tokenizer, original_resampler_state_dict

TEXT_DIM = 32
IMAGE_SIZE = 32
#: The tiny projection (the published one: width 1280, 20 heads of 64, 8 tokens, 4 layers, 512 → 4096).
PROJECTION = dict(dim=32, heads=1, dim_head=64, queries=8, depth=2, ff_mult=4)
FLUX_BLOCKS = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
                   axes_dims_rope=[4, 4, 8])


def characters_t5_tokenizer() -> T5TokenizerFast:
    """A T5 (unigram) tokenizer whose pieces are single characters, so any prompt tokenises offline."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(c, -2.0) for c in string.ascii_lowercase + string.digits]
    return T5TokenizerFast(vocab=pieces, extra_ids=0)


def tiny_infusenet(seed: int = 1) -> FluxControlNetModel:
    """A Flux ControlNet whose zero-initialised output layers are randomised."""
    torch.manual_seed(seed)
    controlnet = FluxControlNetModel(**FLUX_BLOCKS)
    with torch.no_grad():
        for parameter in controlnet.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    return controlnet


def tiny_flux_components() -> dict:
    """Everything ``FluxControlNetPipeline`` needs, random but seeded, InfuseNet included; 32 px images."""
    clip_tokenizer, t5_tokenizer = characters_tokenizer(), characters_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**FLUX_BLOCKS)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id, hidden_size=TEXT_DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(clip_tokenizer), hidden_act="gelu",
        projection_dim=TEXT_DIM, max_position_embeddings=77))
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=TEXT_DIM, d_ff=37, d_kv=8,
                                             num_layers=2, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                             pad_token_id=t5_tokenizer.pad_token_id,
                                             eos_token_id=t5_tokenizer.eos_token_id, decoder_start_token_id=0))
    torch.manual_seed(0)
    vae = AutoencoderKL(sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, block_out_channels=(4, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    models = dict(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, transformer=transformer,
                  controlnet=tiny_infusenet())
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(), tokenizer=clip_tokenizer, tokenizer_2=t5_tokenizer,
                **{name: model.eval() for name, model in models.items()})  # eval: as from_pretrained leaves them


def infiniteyou_projection_state_dict(seed: int = 0, embedding_dim: int = 512) -> dict:
    """An ``image_proj_model.bin`` payload (``{"image_proj": …}``), published key layout, random values."""
    generator = torch.Generator().manual_seed(seed)
    return {"image_proj": original_resampler_state_dict(embedding_dim, TEXT_DIM, generator=generator, **PROJECTION)}


def tiny_infiniteyou(seed: int = 0, embedding_dim: int = 512) -> InfiniteYouPipeline:
    """A ready InfiniteYou pipeline whose projection takes ``embedding_dim``-d identities (128 for
    dlib's, as ``--tiny`` uses); it makes 32 px images unless told otherwise (the reference's 864×1152
    and FLUX's 256 px would be slow here). The global RNG is left as it was."""
    with torch.random.fork_rng():
        state = infiniteyou_projection_state_dict(seed, embedding_dim)["image_proj"]
        projection = InfiniteYouProjection.from_original_state_dict(state)
        projection.eval()
        pipe = InfiniteYouPipeline(**tiny_flux_components(), identity_projection=projection)
    pipe.default_sample_size = IMAGE_SIZE // pipe.vae_scale_factor
    pipe.default_width = pipe.default_height = IMAGE_SIZE
    pipe.face_backends = None   # random weights: trained on no recogniser
    pipe.set_progress_bar_config(disable=True)
    return pipe
