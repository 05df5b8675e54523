"""diffusers pipelines conditioned on face identity; installed as ``idgen.pipelines``."""

from .pipeline_arc2face import Arc2FacePipeline, Arc2FacePipelineOutput
from .pipeline_instantid import InstantIDPipeline

__all__: list[str] = ["Arc2FacePipeline", "Arc2FacePipelineOutput", "InstantIDPipeline"]
