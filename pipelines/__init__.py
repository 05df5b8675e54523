"""diffusers pipelines conditioned on face identity; installed as ``idgen.pipelines``."""

from .pipeline_arc2face import Arc2FacePipeline, Arc2FacePipelineOutput

__all__: list[str] = ["Arc2FacePipeline", "Arc2FacePipelineOutput"]
