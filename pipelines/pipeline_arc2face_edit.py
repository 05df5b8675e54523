"""Arc2Face-style editing: img2img and inpainting conditioned on a face-recognition embedding.

Both classes are the diffusers SD 1.5 img2img / inpaint pipelines with :class:`Arc2FaceMixin` in
front, exactly as :class:`~idgen.pipelines.Arc2FacePipeline` is the text-to-image one: the identity
becomes ``prompt_embeds`` through the same :meth:`~Arc2FaceMixin.encode_identity`, and ``image``,
``strength``, ``mask_image``, ``masked_image_latents``, ``padding_mask_crop`` … are diffusers' own.

>>> edit = Arc2FaceInpaintPipeline.from_pipe(arc2face_pipe)   # shares the loaded weights
>>> edit(id_embeds=vector, image=photo, mask_image=mask, strength=0.9).images[0]

Arc2Face's UNet has 4 input channels, so inpainting runs diffusers' path for such UNets: at every
step the latents outside the mask are reset to the (noised) photo's.
"""

from __future__ import annotations

from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

from .pipeline_arc2face import Arc2FaceMixin


class Arc2FaceImg2ImgPipeline(Arc2FaceMixin, StableDiffusionImg2ImgPipeline):
    """Re-render ``image`` as the given identity; ``strength`` (0–1] sets how much of the photo is
    re-drawn, as in :class:`~diffusers.StableDiffusionImg2ImgPipeline`."""


class Arc2FaceInpaintPipeline(Arc2FaceMixin, StableDiffusionInpaintPipeline):
    """Re-draw the white part of ``mask_image`` in ``image`` as the given identity, as in
    :class:`~diffusers.StableDiffusionInpaintPipeline` (``strength``, ``padding_mask_crop`` …)."""
