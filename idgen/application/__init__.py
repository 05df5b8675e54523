"""What the CLI and the demo share, with no Gradio: which models run and how they load
(:mod:`.hub`), and what each task does as plain functions (:mod:`.actions`). ``idgen generate``
and the demo's Generate tab are the same code."""

from .hub import ModelHub, ModelSettings, settings_from_args

__all__ = ["ModelHub", "ModelSettings", "settings_from_args"]
