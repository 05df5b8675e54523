"""Tiny random SD 1.5-shaped components for fast pipeline tests (the shapes of ``idgen.testing.tiny_arc2face``).

The text encoder is 128 wide so that 128-d dlib embeddings fit, and keeps CLIP's 49,408-token
vocabulary so the real CLIP tokenizer (``../shared/models/clip-tokenizer``) can drive it. Without the
shared folder, :func:`tiny_clip_tokenizer` builds a CLIP BPE tokenizer that knows just the words of
the Arc2Face prompt.
"""

from __future__ import annotations

from conftest import CLIP_TOKENIZER
from transformers import CLIPTokenizer

from idgen.testing.tiny_arc2face import IMAGE_SIZE, TEXT_WIDTH, TINY_TEXT, TINY_UNET, TINY_VAE  # noqa: F401 (re-exported)
from idgen.testing.tiny_arc2face import letters_tokenizer as tiny_clip_tokenizer
from idgen.pipelines import Arc2FacePipeline
from idgen.testing.sd15_architecture import random_sd15_components


def tokenizer():
    """The real SD 1.5 CLIP tokenizer when ../shared is there, else the tiny one."""
    if CLIP_TOKENIZER.exists():
        return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER)
    return tiny_clip_tokenizer()


def tiny_components(seed: int = 0) -> dict:
    parts = random_sd15_components(unet=TINY_UNET, vae=TINY_VAE, text_encoder=TINY_TEXT, seed=seed)
    return {**parts, "tokenizer": tokenizer(), "safety_checker": None, "feature_extractor": None,
            "image_encoder": None, "requires_safety_checker": False}


def tiny_pipeline(seed: int = 0) -> Arc2FacePipeline:
    pipe = Arc2FacePipeline(**tiny_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe
