"""Image generators the dataset engine can drive.

The engine needs one thing from a generator: images for a batch of identity vectors, one
``torch.Generator`` per image so that every image's randomness is its own (the same image comes
out whatever batch it lands in, on however many processes):

    generator(id_embeds: Tensor[B, D], generators: list[torch.Generator], **conditions) -> list[PIL.Image]

``conditions`` holds per-image lists such as ``prompt`` (from ``variation.prompts``) and ``pose``
(five keypoints as fractions of width and height, from the pose bank ``variation.poses``) when the
variation config sets them; :class:`InstantIDGenerator` and :class:`InfiniteYouGenerator` use both.
Any diffusers pipeline fits behind a few-line adapter like :class:`Arc2FaceGenerator`. A config
names its generator by a registered name (:func:`generator_types`): the built-in ones, or one an
installed package registers in the :data:`ENTRY_POINT_GROUP` entry-point group. A config never
names a module to import.

Per-image seeds are not enough: convolution and matrix-product kernels choose their blocking, and so
their rounding, by the batch shape, so the same image made in a batch of 16 and in a batch of 3
differs in its last bits (and then in a few JPEG bytes). The diffusion adapters therefore run their
pipeline on pieces of exactly ``micro_batch`` images (:class:`FixedBatchAdapter`), padding the last
one; an image then depends on what it is, not on which images share its batch.
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance

from ..errors import ConfigError
from ..identity import normalize, random_identities


class ImageGenerator(Protocol):
    def __call__(self, id_embeds: torch.Tensor, generators: list[torch.Generator], **conditions) -> list[Image.Image]: ...


#: Images per pipeline call of the diffusion adapters unless ``generator.micro_batch`` says otherwise.
DEFAULT_MICRO_BATCH = 8


def check_micro_batch(value) -> int:
    """``value`` when it is a whole number ≥ 1, else a :class:`ConfigError` naming
    ``generator.micro_batch``; the adapters' loaders call it before loading any weights."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"generator.micro_batch must be a whole number ≥ 1 (images per pipeline call), got {value!r}")
    return value


class FixedBatchAdapter:
    """What the diffusion adapters share: the pipeline always runs on exactly ``micro_batch`` images.

    A call with any number of images is cut into consecutive pieces of ``micro_batch``; the last
    piece is padded with copies of its last image, each with a spare generator, and their outputs
    are dropped. Every pipeline call then has the same batch shape, so an image does not depend on
    how many images came with it. Nor on which ones: kernels pick their blocking by the shape, not
    by the values of the other rows (measured on CPU: an image comes out bit-identical at any
    position among any neighbours). ``micro_batch`` itself changes the images' last bits, so it is
    a generator setting (``generator.micro_batch``, which a resumed run must keep), not a runtime
    one. Subclasses implement :meth:`_render`.
    """

    def __init__(self, pipeline, micro_batch: int = DEFAULT_MICRO_BATCH):
        self.pipeline = pipeline
        self.micro_batch = check_micro_batch(micro_batch)

    def __call__(self, id_embeds, generators, **conditions):
        size, images = self.micro_batch, []
        for start in range(0, len(id_embeds), size):
            rows = list(range(start, min(start + size, len(id_embeds))))
            padded = rows + rows[-1:] * (size - len(rows))
            spare = [torch.Generator(generators[rows[-1]].device).manual_seed(0) for _ in range(size - len(rows))]
            piece_conditions = {key: [values[i] for i in padded] for key, values in conditions.items()}
            rendered = self._render(id_embeds[padded], [generators[i] for i in rows] + spare, **piece_conditions)
            images.extend(rendered[:len(rows)])
        return images

    def _render(self, id_embeds, generators, **conditions) -> list[Image.Image]:
        """One pipeline call: an image per row of ``id_embeds``."""
        raise NotImplementedError


class Arc2FaceGenerator(FixedBatchAdapter):
    """Adapter for an Arc2Face-style diffusers pipeline (``idgen.pipelines.Arc2FacePipeline``).

    Calls ``pipeline(id_embeds=..., num_images_per_prompt=1, generator=[...], ...)`` with one
    row per image (``micro_batch`` rows per call), so a batch mixes identities and each image keeps
    its own generator.
    """

    def __init__(self, pipeline, num_inference_steps: int = 25, guidance_scale: float = 3.0, micro_batch: int = DEFAULT_MICRO_BATCH,
                 **call_kwargs):
        super().__init__(pipeline, micro_batch)
        self.call_kwargs = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, **call_kwargs)

    @classmethod
    def from_pretrained(cls, path: str, base: str | None = None, device=None, dtype: str | None = None,
                        **call_kwargs) -> "Arc2FaceGenerator":
        """A saved idgen Arc2Face pipeline ``path`` (``save_pretrained`` layout), or with ``base`` the
        published checkpoint: ``path`` holds ``arc2face/`` and ``encoder/`` (``FoivosPar/Arc2Face``)
        and ``base`` is SD 1.5 (:meth:`~idgen.pipelines.Arc2FacePipeline.from_arc2face`); each a hub
        id or a folder."""
        from ..pipelines import Arc2FacePipeline

        check_micro_batch(call_kwargs.get("micro_batch", DEFAULT_MICRO_BATCH))
        weights = getattr(torch, dtype) if dtype else None
        if base is None:
            pipeline = Arc2FacePipeline.from_pretrained(path, dtype=weights)
        else:
            pipeline = Arc2FacePipeline.from_arc2face(base, path, dtype=weights)
        if device is not None:
            pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, **call_kwargs)

    @classmethod
    def mini(cls, device=None, dtype: str | None = None, **call_kwargs) -> "Arc2FaceGenerator":
        """The embedded mini model (:mod:`idgen.pipelines.mini`): 64×64 faces offline, conditioned
        on 128-d MobileFaceNet identities."""
        from ..pipelines.mini import load_mini_pipeline

        check_micro_batch(call_kwargs.get("micro_batch", DEFAULT_MICRO_BATCH))
        pipeline = load_mini_pipeline(device, getattr(torch, dtype) if dtype else None)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, **call_kwargs)

    def _render(self, id_embeds, generators, **conditions):
        unet = self.pipeline.unet
        result = self.pipeline(
            id_embeds=id_embeds.to(unet.device, unet.dtype), num_images_per_prompt=1, generator=generators,
            output_type="pil", **self.call_kwargs, **conditions,
        )
        return result.images


class _PromptAndPoseGenerator(FixedBatchAdapter):
    """What the adapters of text-and-pose pipelines share: per image a text prompt (the ``prompt``
    condition, else ``default_prompt``) and a pose (the ``pose`` condition: five keypoints as
    fractions of width and height) turned into pixels of the ``width × height`` output (default: the
    pipeline's own, ``native`` = (width, height))."""

    def __init__(self, pipeline, native: tuple[int, int], *, default_prompt: str, height: int | None,
                 width: int | None, micro_batch: int = DEFAULT_MICRO_BATCH, **call_kwargs):
        super().__init__(pipeline, micro_batch)
        self.default_prompt = default_prompt
        self.height, self.width = height or native[1], width or native[0]
        self.call_kwargs = call_kwargs

    @classmethod
    def _around(cls, pipeline, device, **settings):
        """An adapter around ``pipeline``, moved to ``device`` when given, its progress bars off."""
        if device is not None:
            pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, **settings)

    @classmethod
    def tiny(cls, embedding_dim: int = 512, seed: int = 0, device=None, **settings):
        """The offline preset: the tiny random pipeline of this kind (noise, not faces; see
        :mod:`idgen.testing`) whose projection takes ``embedding_dim``-d identities, 2 steps unless
        ``settings`` say otherwise, for trying the engine without any download."""
        check_micro_batch(settings.get("micro_batch", DEFAULT_MICRO_BATCH))
        return cls._around(cls._tiny_pipeline(embedding_dim, seed), device, **{"num_inference_steps": 2, **settings})

    def _prompts(self, count: int, prompt) -> list[str]:
        return list(prompt) if prompt is not None else [self.default_prompt] * count

    def _keypoints(self, poses) -> np.ndarray:
        """N × 5 × 2 pixels of the output image."""
        return np.asarray(poses, dtype=np.float64) * np.array([self.width, self.height])


class InstantIDGenerator(_PromptAndPoseGenerator):
    """Adapter for an InstantID-style diffusers pipeline (``idgen.pipelines.InstantIDPipeline``).

    Per image it takes a text prompt (the ``prompt`` condition, else ``default_prompt``) and a pose
    (the ``pose`` condition: five keypoints as fractions of width and height, else the frontal
    ArcFace template), which it draws as the IdentityNet's keypoint image at the output size; each
    pipeline call makes ``micro_batch`` images, each with its own ``torch.Generator``. InstantID's
    face adapter was trained on insightface's raw (un-normalised) embeddings, whose entries have
    a standard deviation of about 1, so the unit identity vector is scaled to ``embedding_norm``
    (default √D) before it goes in.
    """

    def __init__(self, pipeline, *, default_prompt: str = "a photo of a person", embedding_norm: float | None = None,
                 height: int | None = None, width: int | None = None, num_inference_steps: int = 30,
                 guidance_scale: float = 5.0, **call_kwargs):
        side = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
        super().__init__(pipeline, (side, side), default_prompt=default_prompt, height=height, width=width,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, **call_kwargs)
        self.embedding_norm = embedding_norm

    @classmethod
    def from_pretrained(cls, path: str = "InstantX/InstantID", base: str = "stabilityai/stable-diffusion-xl-base-1.0",
                        device=None, dtype: str | None = None, **settings) -> "InstantIDGenerator":
        """InstantID's IdentityNet (``path/ControlNetModel``) and face adapter (``path/ip-adapter.bin``)
        on an SDXL base, each a hub id or a local folder."""
        from diffusers import ControlNetModel

        from ..pipelines import InstantIDPipeline

        check_micro_batch(settings.get("micro_batch", DEFAULT_MICRO_BATCH))
        weights = getattr(torch, dtype) if dtype else None
        identitynet = ControlNetModel.from_pretrained(path, subfolder="ControlNetModel", dtype=weights)
        pipeline = InstantIDPipeline.from_pretrained(base, controlnet=identitynet, dtype=weights)
        pipeline.load_instantid_adapter(path)
        return cls._around(pipeline, device, **settings)

    @staticmethod
    def _tiny_pipeline(embedding_dim: int, seed: int):
        """64 px, :mod:`idgen.testing.tiny_instantid`."""
        from ..testing import tiny_instantid

        return tiny_instantid(embedding_dim, seed)

    def _render(self, id_embeds, generators, prompt=None, pose=None, **conditions):
        from ..faces import ARCFACE_TEMPLATE
        from ..pipelines.keypoints import draw_keypoints

        count = len(id_embeds)
        poses = self._keypoints(pose if pose is not None else [ARCFACE_TEMPLATE / 112.0] * count)
        keypoint_images = [draw_keypoints(p, (self.width, self.height)) for p in poses]
        norm = self.embedding_norm or id_embeds.shape[-1] ** 0.5
        result = self.pipeline(
            self._prompts(count, prompt), id_embeds=normalize(id_embeds.float().cpu()) * norm, image=keypoint_images,
            height=self.height, width=self.width, num_images_per_prompt=1, generator=generators,
            output_type="pil", **self.call_kwargs, **conditions,
        )
        return result.images


class InfiniteYouGenerator(_PromptAndPoseGenerator):
    """Adapter for an InfiniteYou-style diffusers pipeline (``idgen.pipelines.InfiniteYouPipeline``).

    Per image it takes a text prompt (the ``prompt`` condition, else ``default_prompt``) and, when
    the variation config has a pose bank, a pose (the ``pose`` condition), which InfuseNet gets as
    that image's keypoint image; without poses it gets none, as in InfiniteYou, and the prompt decides
    the pose. Each pipeline call makes ``micro_batch`` images, each with its own ``torch.Generator``.
    The pipeline normalises the identity itself, so the unit vectors go in unchanged.
    """

    def __init__(self, pipeline, *, default_prompt: str = "a photo of a person", height: int | None = None,
                 width: int | None = None, num_inference_steps: int = 30, guidance_scale: float = 3.5, **call_kwargs):
        super().__init__(pipeline, (pipeline.default_width, pipeline.default_height),
                         default_prompt=default_prompt, height=height, width=width,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, **call_kwargs)

    @classmethod
    def from_pretrained(cls, path: str = "ByteDance/InfiniteYou", base: str = "black-forest-labs/FLUX.1-dev",
                        variant: str = "aes_stage2", device=None, dtype: str | None = "bfloat16",
                        **settings) -> "InfiniteYouGenerator":
        """InfiniteYou's InfuseNet and identity projection (``path/infu_flux_v1.0/<variant>/``) on a
        FLUX.1-dev ``base``, each a hub id or a local folder (:func:`~idgen.pipelines.load_infiniteyou_pipeline`),
        in bfloat16 unless ``dtype`` says otherwise (FLUX.1-dev overflows in float16)."""
        from ..pipelines import load_infiniteyou_pipeline

        check_micro_batch(settings.get("micro_batch", DEFAULT_MICRO_BATCH))
        pipeline = load_infiniteyou_pipeline(base, path, variant=variant,
                                             dtype=getattr(torch, dtype) if dtype else torch.float32)
        return cls._around(pipeline, device, **settings)

    @staticmethod
    def _tiny_pipeline(embedding_dim: int, seed: int):
        """32 px, :mod:`idgen.testing.tiny_infiniteyou`."""
        from ..testing import tiny_infiniteyou

        return tiny_infiniteyou(seed, embedding_dim)

    def _render(self, id_embeds, generators, prompt=None, pose=None, **conditions):
        keypoints = None if pose is None else self._keypoints(pose)
        result = self.pipeline(  # the pipeline reads the identities as an array: they go in on the CPU
            self._prompts(len(id_embeds), prompt), id_embeds=id_embeds.float().cpu(),
            keypoints=keypoints, height=self.height, width=self.width, num_images_per_prompt=1,
            generator=generators, output_type="pil", **self.call_kwargs, **conditions,
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
        from ..faces import iter_image_files, load_image

        if isinstance(photos, (str, os.PathLike)):
            photos = list(iter_image_files(photos))
        if not photos:
            raise ConfigError("PhotoJitterGenerator needs at least one face photo (generator.photos: <folder>)")
        self.photos = [Image.fromarray(load_image(p)) for p in photos]
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


#: The entry-point group of third-party generators. A package registers ``NAME = "package.module:factory"``
#: (``[project.entry-points."idgen.generators"]`` in its ``pyproject.toml``); ``generator.type: NAME``
#: then calls ``factory(device=device, **the other generator keys)``.
ENTRY_POINT_GROUP = "idgen.generators"

#: The generator types idgen itself provides (:func:`build_generator`); a registered one of the same
#: name does not replace them.
BUILT_IN_TYPES = ("photo", "arc2face", "mini", "instantid", "instantid-tiny", "infiniteyou", "infiniteyou-tiny")


def registered_generators() -> dict:
    """The third-party generators installed: name → its entry point (:data:`ENTRY_POINT_GROUP`)."""
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name not in BUILT_IN_TYPES}


def generator_types() -> list[str]:
    """Every name ``generator.type`` accepts: the built-in ones, then the registered ones."""
    return [*BUILT_IN_TYPES, *sorted(registered_generators())]


def build_generator(spec: dict, device=None, identity_dim: int | None = None) -> ImageGenerator:
    """A generator from the config's ``generator`` mapping.

    ``type: photo`` (:class:`PhotoJitterGenerator`, needs ``photos``), ``type: arc2face``
    (:meth:`Arc2FaceGenerator.from_pretrained`, needs ``path``; with ``base``, ``path`` is the published
    checkpoint and ``base`` SD 1.5), ``type: instantid``
    (:meth:`InstantIDGenerator.from_pretrained`, needs ``path``; ``base`` is the SDXL model),
    ``type: mini`` (:meth:`Arc2FaceGenerator.mini`, the embedded model, offline, 128-d identities),
    ``type: instantid-tiny`` (:meth:`InstantIDGenerator.tiny`, offline; its adapter takes
    ``identity_dim``-d vectors unless ``embedding_dim`` says otherwise), ``type: infiniteyou``
    (:meth:`InfiniteYouGenerator.from_pretrained`, needs ``path``; ``base`` is FLUX.1-dev, ``variant``
    ``aes_stage2`` or ``sim_stage1``), ``type: infiniteyou-tiny`` (:meth:`InfiniteYouGenerator.tiny`,
    offline, ``identity_dim`` as for ``instantid-tiny``), or the name of a generator an installed
    package registered (:data:`ENTRY_POINT_GROUP`), whose factory is called as
    ``factory(device=device, **rest)``. Every other key is passed on (e.g. ``num_inference_steps``,
    ``guidance_scale``, ``default_prompt``). Any other type is a ConfigError listing the accepted
    names; nothing is imported for it.
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if not isinstance(kind, str):
        raise _unknown_type(kind)
    if kind == "photo":
        if "photos" not in spec:
            raise ConfigError("generator type 'photo' needs generator.photos: <folder of face photos>")
        return PhotoJitterGenerator(**spec)
    adapters = {"arc2face": Arc2FaceGenerator, "instantid": InstantIDGenerator, "infiniteyou": InfiniteYouGenerator}
    if kind in adapters:
        if "path" not in spec:
            raise ConfigError(f"generator type {kind!r} needs generator.path: <hub id or folder>")
        return adapters[kind].from_pretrained(spec.pop("path"), device=device, **spec)
    if kind == "mini":
        from ..pipelines.mini import MINI_IDENTITY_DIM

        if identity_dim not in (None, MINI_IDENTITY_DIM):
            raise ConfigError(f"generator type 'mini' conditions on {MINI_IDENTITY_DIM}-d MobileFaceNet identities, "
                              f"but identities.dim is {identity_dim}; leave identities.dim and filter.recognizer unset "
                              f"(or set identities.dim: {MINI_IDENTITY_DIM} and filter.recognizer: mobilefacenet)")
        return Arc2FaceGenerator.mini(device=device, **spec)
    if kind in ("instantid-tiny", "infiniteyou-tiny"):
        if identity_dim is not None:
            spec.setdefault("embedding_dim", identity_dim)
        return adapters[kind.removesuffix("-tiny")].tiny(device=device, **spec)
    registered = registered_generators()
    if kind not in registered:
        raise _unknown_type(kind)
    return registered[kind].load()(device=device, **spec)


def _unknown_type(kind) -> ConfigError:
    return ConfigError(f"unknown generator type {kind!r}; use one of {', '.join(generator_types())} (a third-party "
                       f"generator is registered by its package in the {ENTRY_POINT_GROUP!r} entry-point group; "
                       "a config cannot name a module to import)")


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of keys (run seed, identity, image, try, or a name such as
    ``"pose"``), so an image's randomness depends on what it is, never on its batch or process."""
    import hashlib

    digest = hashlib.sha256(",".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
