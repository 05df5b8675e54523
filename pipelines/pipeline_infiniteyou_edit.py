"""InfiniteYou-style editing: FLUX ControlNet img2img and inpainting with an identity and a pose.

Both classes are diffusers' Flux ControlNet img2img / inpaint pipelines with :class:`InfiniteYouMixin`
in front, as :class:`~idgen.pipelines.InfiniteYouPipeline` is the text-to-image one: the same
identity tokens reach InfuseNet alone, and the keypoint image goes in as ``control_image`` because
``image`` is the photo being edited. ``strength``, ``mask_image``, ``padding_mask_crop`` … are
diffusers' own.

>>> edit = InfiniteYouInpaintPipeline.from_pipe(infiniteyou_pipe)   # shares the loaded weights
>>> edit("a portrait", id_embeds=vector, keypoints=face.landmarks, image=photo, mask_image=mask,
...      height=1024, width=1024).images[0]

Pass ``height`` / ``width``: like diffusers', these pipelines resize ``image`` to them (default
1024 × 1024), and the keypoints are pixels of that size.
"""

from __future__ import annotations

from diffusers import FluxControlNetImg2ImgPipeline, FluxControlNetInpaintPipeline

from .pipeline_infiniteyou import InfiniteYouMixin


class InfiniteYouImg2ImgPipeline(InfiniteYouMixin, FluxControlNetImg2ImgPipeline):
    """Re-render ``image`` as the given identity in the given pose, steered by the prompt;
    ``strength`` as in :class:`~diffusers.FluxControlNetImg2ImgPipeline`."""


class InfiniteYouInpaintPipeline(InfiniteYouMixin, FluxControlNetInpaintPipeline):
    """Re-draw the white part of ``mask_image`` in ``image`` as the given identity in the given pose,
    as in :class:`~diffusers.FluxControlNetInpaintPipeline`."""
