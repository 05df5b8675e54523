"""Image generators the dataset engine can drive.

The engine needs one thing from a generator: images for a batch of identity vectors, one
``torch.Generator`` per image so that every image's randomness is its own (the same image comes
out whatever batch it lands in, on however many processes):

    generator(id_embeds: Tensor[B, D], generators: list[torch.Generator], **conditions) -> list[PIL.Image]

``conditions`` holds per-image lists such as ``prompt`` and ``pose`` when the variation config
sets them (InstantID-style pipelines use them). Any diffusers pipeline fits behind a few-line
adapter like :class:`Arc2FaceGenerator`; :func:`build_generator` also accepts
``"package.module:factory"`` for your own.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance

from ..errors import ConfigError
from ..identity import random_identities


class ImageGenerator(Protocol):
    def __call__(self, id_embeds: torch.Tensor, generators: list[torch.Generator], **conditions) -> list[Image.Image]: ...


class Arc2FaceGenerator:
    """Adapter for an Arc2Face-style diffusers pipeline (``idgen.pipelines.Arc2FacePipeline``).

    Calls ``pipeline(id_embeds=..., num_images_per_prompt=1, generator=[...], ...)`` with one
    row per image, so a batch mixes identities and each image keeps its own generator.
    """

    def __init__(self, pipeline, num_inference_steps: int = 25, guidance_scale: float = 3.0, **call_kwargs):
        self.pipeline = pipeline
        self.call_kwargs = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, **call_kwargs)

    @classmethod
    def from_pretrained(cls, path: str, device=None, torch_dtype: str | None = None, **call_kwargs) -> "Arc2FaceGenerator":
        from ..pipelines import Arc2FacePipeline

        dtype = getattr(torch, torch_dtype) if torch_dtype else None
        pipeline = Arc2FacePipeline.from_pretrained(path, torch_dtype=dtype)
        if device is not None:
            pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, **call_kwargs)

    def __call__(self, id_embeds, generators, **conditions):
        unet = self.pipeline.unet
        result = self.pipeline(
            id_embeds=id_embeds.to(unet.device, unet.dtype), num_images_per_prompt=1, generator=generators,
            output_type="pil", **self.call_kwargs, **conditions,
        )
        return result.images


class PhotoJitterGenerator:
    """A stand-in generator that needs no model: it is NOT a diffusion model.

    It renders one of a bank of real face photos, chosen by the identity vector (nearest of fixed
    random keys), with seeded jitter (shift, zoom, brightness, mirror). With probability
    ``failure_rate`` it scrambles the image into 16×16 tiles, imitating a generator failure with
    no face in it. It exists so the engine (batching, filtering, resuming, writing) can be tested
    and benchmarked offline against a real face recogniser.
    """

    def __init__(self, photos: str | os.PathLike | Sequence, size: int = 224, failure_rate: float = 0.0,
                 key_seed: int = 1234):
        if isinstance(photos, (str, os.PathLike)):
            from ..faces import iter_image_files

            photos = list(iter_image_files(photos))
        if not photos:
            raise ConfigError("PhotoJitterGenerator needs at least one face photo (generator.photos: <folder>)")
        self.photos = [Image.open(p).convert("RGB") for p in photos]
        self.size = size
        self.failure_rate = failure_rate
        self.key_seed = key_seed
        self._keys: dict[int, torch.Tensor] = {}

    def photo_index(self, id_embeds: torch.Tensor) -> torch.Tensor:
        """Which photo each identity vector renders."""
        dim = id_embeds.shape[-1]
        if dim not in self._keys:
            generator = torch.Generator().manual_seed(self.key_seed)
            self._keys[dim] = random_identities(len(self.photos), dim, generator=generator)
        return (id_embeds.float().cpu() @ self._keys[dim].T).argmax(-1)

    def __call__(self, id_embeds, generators, **conditions):
        return [self._render(self.photos[int(i)], g) for i, g in zip(self.photo_index(id_embeds), generators)]

    def _render(self, photo: Image.Image, generator: torch.Generator) -> Image.Image:
        u = torch.rand(6, generator=generator).tolist()
        width, height = photo.size
        zoom = 0.9 + 0.2 * u[0]
        side = min(width, height) / zoom
        cx = width / 2 + (u[1] - 0.5) * 0.12 * width
        cy = height / 2 + (u[2] - 0.5) * 0.12 * height
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        image = photo.transform((self.size, self.size), Image.EXTENT, box, Image.BICUBIC)
        image = ImageEnhance.Brightness(image).enhance(0.85 + 0.3 * u[3])
        if u[4] < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if u[5] < self.failure_rate:
            image = _scramble(image, generator)
        return image


def _scramble(image: Image.Image, generator: torch.Generator, tile: int = 16) -> Image.Image:
    pixels = np.asarray(image)
    rows, cols = pixels.shape[0] // tile, pixels.shape[1] // tile
    tiles = pixels[:rows * tile, :cols * tile].reshape(rows, tile, cols, tile, 3).swapaxes(1, 2).reshape(-1, tile, tile, 3)
    tiles = tiles[torch.randperm(len(tiles), generator=generator).numpy()]
    out = tiles.reshape(rows, cols, tile, tile, 3).swapaxes(1, 2).reshape(rows * tile, cols * tile, 3)
    return Image.fromarray(np.ascontiguousarray(out)).resize(image.size)


def build_generator(spec: dict, device=None) -> ImageGenerator:
    """A generator from the config's ``generator`` mapping.

    ``type: photo`` (:class:`PhotoJitterGenerator`, needs ``photos``), ``type: arc2face``
    (:meth:`Arc2FaceGenerator.from_pretrained`, needs ``path``), or ``type: "pkg.module:factory"``
    called as ``factory(device=device, **rest)``.
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "photo":
        if "photos" not in spec:
            raise ConfigError("generator type 'photo' needs generator.photos: <folder of face photos>")
        return PhotoJitterGenerator(**spec)
    if kind == "arc2face":
        if "path" not in spec:
            raise ConfigError("generator type 'arc2face' needs generator.path: <hub id or folder>")
        return Arc2FaceGenerator.from_pretrained(spec.pop("path"), device=device, **spec)
    if isinstance(kind, str) and ":" in kind:
        module, name = kind.split(":", 1)
        return getattr(importlib.import_module(module), name)(device=device, **spec)
    raise ConfigError(f"unknown generator type {kind!r}; use 'photo', 'arc2face' or 'package.module:factory'")


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (run seed, identity, image, try), so an image's
    randomness depends on what it is, never on its batch or process."""
    import hashlib

    digest = hashlib.sha256(",".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
