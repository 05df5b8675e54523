"""A tiny random Arc2Face pipeline (``--tiny``, the tests): every tab runs offline in seconds, producing noise.

Nothing here is trained. The pipeline has Stable Diffusion 1.5's architecture shrunk to
two 32/64-wide blocks and a 128-wide text encoder (so dlib's 128-d embeddings fit), and a CLIP BPE
tokenizer that knows only the letters and the words of the Arc2Face prompt. Its InstantID
counterpart is :mod:`idgen.testing.tiny_instantid`. The demo page says "tiny random models" in its
title whenever these are in use.
"""

from __future__ import annotations

import torch
from transformers import CLIPTokenizer

from ..pipelines import Arc2FacePipeline
from ..pipelines.pipeline_arc2face import ARC2FACE_PROMPT
from .sd15_architecture import random_sd15_components

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

