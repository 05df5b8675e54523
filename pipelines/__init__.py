"""diffusers pipelines conditioned on face identity; installed as ``idgen.pipelines``."""

from .pipeline_arc2face import Arc2FaceMixin, Arc2FacePipeline, Arc2FacePipelineOutput
from .pipeline_arc2face_controlnet import Arc2FaceControlNetPipeline
from .pipeline_arc2face_edit import Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline
from .infiniteyou_projection import InfiniteYouProjection, convert_infiniteyou_projection
from .pipeline_infiniteyou import (InfiniteYouMixin, InfiniteYouPipeline, InfiniteYouPipelineOutput,
                                   load_infiniteyou_pipeline)
from .pipeline_infiniteyou_edit import InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline
from .pipeline_instantid import InstantIDMixin, InstantIDPipeline
from .pipeline_instantid_edit import InstantIDImg2ImgPipeline, InstantIDInpaintPipeline

__all__: list[str] = ["Arc2FaceControlNetPipeline", "Arc2FaceImg2ImgPipeline", "Arc2FaceInpaintPipeline", "Arc2FaceMixin", "Arc2FacePipeline",
                      "Arc2FacePipelineOutput", "InfiniteYouImg2ImgPipeline", "InfiniteYouInpaintPipeline",
                      "InfiniteYouMixin", "InfiniteYouPipeline", "InfiniteYouPipelineOutput", "InfiniteYouProjection", "InstantIDImg2ImgPipeline", "InstantIDInpaintPipeline",
                      "InstantIDMixin", "InstantIDPipeline", "convert_infiniteyou_projection",
                      "load_infiniteyou_pipeline"]
