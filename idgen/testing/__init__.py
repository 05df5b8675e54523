"""Tiny, randomly initialised models built in code: for the tests, ``--tiny`` and the ``*-tiny``
presets. They draw noise, not faces; they exist so that everything runs offline in seconds.
(:mod:`idgen.pipelines.mini` is the small *trained* model that draws faces.) Also the published
full-size architectures (:mod:`.sd15_architecture`, :mod:`.flux_architecture`), for checking tensor
names and measuring speed and memory without downloading weights."""

from .tiny_arc2face import IMAGE_SIZE, TEXT_WIDTH, TINY_TEXT, TINY_UNET, TINY_VAE, letters_tokenizer, tiny_arc2face
from .tiny_infiniteyou import tiny_flux_components, tiny_infiniteyou
from .tiny_instantid import characters_tokenizer, tiny_instantid, tiny_sdxl_components

__all__ = ["IMAGE_SIZE", "TEXT_WIDTH", "TINY_TEXT", "TINY_UNET", "TINY_VAE", "characters_tokenizer",
           "letters_tokenizer", "tiny_arc2face", "tiny_flux_components", "tiny_infiniteyou", "tiny_instantid",
           "tiny_sdxl_components"]
