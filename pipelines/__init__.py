"""diffusers pipelines conditioned on face identity; installed as ``idgen.pipelines``."""

__all__: list[str] = []
