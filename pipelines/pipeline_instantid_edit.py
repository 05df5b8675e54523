"""InstantID-style editing: SDXL ControlNet img2img and inpainting with an identity and a pose.

Both classes are diffusers' SDXL ControlNet img2img / inpaint pipelines with :class:`InstantIDMixin`
in front, as :class:`~idgen.pipelines.InstantIDPipeline` is the text-to-image one: the same face
tokens, IP-Adapter embeddings and keypoint image, with the keypoint image passed as
``control_image`` because ``image`` is the photo being edited. ``strength``, ``mask_image``,
``padding_mask_crop`` … are diffusers' own.

>>> edit = InstantIDInpaintPipeline.from_pipe(instantid_pipe)   # shares the loaded weights
>>> edit("a portrait", id_embeds=vector, keypoints=face.landmarks, image=photo, mask_image=mask).images[0]
"""

from __future__ import annotations

from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetInpaintPipeline

from .pipeline_instantid import InstantIDMixin


class InstantIDImg2ImgPipeline(InstantIDMixin, StableDiffusionXLControlNetImg2ImgPipeline):
    """Re-render ``image`` as the given identity in the given pose, steered by the prompt;
    ``strength`` as in :class:`~diffusers.StableDiffusionXLControlNetImg2ImgPipeline`."""

    control_image_argument = "control_image"


class InstantIDInpaintPipeline(InstantIDMixin, StableDiffusionXLControlNetInpaintPipeline):
    """Re-draw the white part of ``mask_image`` in ``image`` as the given identity in the given pose,
    as in :class:`~diffusers.StableDiffusionXLControlNetInpaintPipeline`."""

    control_image_argument = "control_image"
