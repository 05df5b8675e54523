"""The Gradio demo (``python app.py``): models named by flags or ``IDGEN_*`` variables, loaded on
first use; ``--tiny`` swaps in tiny random models that run offline.

>>> from idgen.demo import ModelHub, ModelSettings, build_demo, launch
>>> launch(build_demo(ModelHub(ModelSettings.from_environment(tiny=True))))
"""

from ..application import ModelHub, ModelSettings
from .ui import build_demo, friendly_errors, launch

__all__ = ["ModelHub", "ModelSettings", "build_demo", "friendly_errors", "launch"]
