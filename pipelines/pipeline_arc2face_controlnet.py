"""Arc2Face with its pose ControlNet (``controlnet/`` of ``FoivosPar/Arc2Face``).

The ControlNet was trained on Arc2Face with a rendered face normal map as its condition (the
reference renders it from an EMOCA / FLAME fit of a pose photo). This class is diffusers'
:class:`~diffusers.StableDiffusionControlNetPipeline` with :class:`Arc2FaceMixin` in front: the
identity becomes ``prompt_embeds`` and ``image`` (the normal map), ``controlnet_conditioning_scale``,
``guess_mode`` … are diffusers' own.

>>> pipe = Arc2FaceControlNetPipeline.from_arc2face(base, "FoivosPar/Arc2Face")   # loads controlnet/
>>> pipe(id_embeds=vector, image=normal_map).images[0]
>>> posed = Arc2FaceControlNetPipeline.from_pipe(arc2face_pipe, controlnet=controlnet)  # shares weights
"""

from __future__ import annotations

from diffusers import StableDiffusionControlNetPipeline

from .pipeline_arc2face import Arc2FaceMixin


class Arc2FaceControlNetPipeline(Arc2FaceMixin, StableDiffusionControlNetPipeline):
    """Arc2Face posed by a face normal map (``image``) through its ControlNet; everything else as
    :class:`~idgen.pipelines.Arc2FacePipeline` (expression and reference adapters included)."""
