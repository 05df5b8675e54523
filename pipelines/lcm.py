"""The fast preset shared by the identity pipelines: an LCM-LoRA plus :class:`~diffusers.LCMScheduler`.

A latent-consistency LoRA distilled from the base model lets it denoise in a handful of steps at
guidance ≈ 1. Loading it is the stock ``load_lora_weights``, so any LoRA folder or hub id in the
diffusers layout works (the published ``latent-consistency/lcm-lora-sdv1-5`` and ``lcm-lora-sdxl``
included); the pipeline class names its default LoRA and the settings it is meant for.
"""

from __future__ import annotations

import os
from typing import Union

from diffusers import LCMScheduler


class LCMLoRAMixin:
    """``enable_lcm_lora`` / ``disable_lcm_lora`` for a diffusers pipeline with ``LoraLoaderMixin``."""

    #: Hub id of the LCM-LoRA distilled from this pipeline's base model.
    lcm_lora_default: str
    #: The call settings that go with it (to splat into ``pipe(...)``).
    lcm_preset: dict

    def enable_lcm_lora(self, lora: Union[str, os.PathLike, dict, None] = None, adapter_name: str = "lcm",
                        **kwargs) -> dict:
        """Load ``lora`` (default :attr:`lcm_lora_default`) and switch to ``LCMScheduler``; returns
        :attr:`lcm_preset`. Undo with :meth:`disable_lcm_lora`."""
        self.load_lora_weights(lora if lora is not None else self.lcm_lora_default, adapter_name=adapter_name,
                               **kwargs)
        self._scheduler_before_lcm = self.scheduler
        self.scheduler = LCMScheduler.from_config(self.scheduler.config)
        return dict(self.lcm_preset)

    def disable_lcm_lora(self, adapter_name: str = "lcm") -> None:
        """Remove the LCM-LoRA and restore the scheduler that was in use before :meth:`enable_lcm_lora`."""
        self.delete_adapters(adapter_name)
        self.scheduler = self._scheduler_before_lcm
