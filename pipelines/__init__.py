"""diffusers pipelines conditioned on face identity; installed as ``idgen.pipelines``."""

from .pipeline_instantid import InstantIDPipeline

__all__: list[str] = ["InstantIDPipeline"]
