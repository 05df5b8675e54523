"""The fast preset shared by the identity pipelines: an LCM-LoRA plus :class:`~diffusers.LCMScheduler`.

A latent-consistency LoRA distilled from the base model lets it denoise in a handful of steps at
guidance ≈ 1. Loading it is the stock ``load_lora_weights``, so any LoRA folder or hub id in the
diffusers layout works (the published ``latent-consistency/lcm-lora-sdv1-5`` and ``lcm-lora-sdxl``
included); the pipeline class names its default LoRA and the settings it is meant for. A LoRA on
disk is checked first (:func:`local_lora_file`), so a damaged one is refused naming its file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from diffusers import LCMScheduler

from idgen.errors import DataError, ModelFilesMissingError
from idgen.io import LORA_WEIGHT_NAME, open_safetensors, read_torch_weights

#: What to do about a LoRA on disk that cannot be loaded.
LORA_FIX = ("pass an LCM-LoRA made for this pipeline's base model: a folder holding "
            f"{LORA_WEIGHT_NAME} (diffusers' layout), or that file")


def local_lora_file(lora, weight_name: Optional[str] = None) -> Optional[Path]:
    """The weights file of a LoRA given as a local folder or file, checked before diffusers reads it
    (None for a hub id or a state dict): a safetensors file cut short, a pickle that asks for code or
    a folder without weights raises an :class:`~idgen.errors.IdgenError` naming it. In a folder,
    ``weight_name``, else :data:`~idgen.io.LORA_WEIGHT_NAME`, else its one other ``.safetensors`` file,
    else ``pytorch_lora_weights.bin`` (read with ``weights_only=True``, as diffusers reads it)."""
    if isinstance(lora, dict) or not Path(lora).exists():
        return None
    path = Path(lora)
    if path.is_dir():
        others = sorted(path.glob("*.safetensors"))
        names = [weight_name] if weight_name else [LORA_WEIGHT_NAME, *[p.name for p in others if len(others) == 1],
                                                   "pytorch_lora_weights.bin"]
        path = next((path / name for name in names if (path / name).is_file()), None)
        if path is None:
            raise ModelFilesMissingError(f"{lora}: no {names[0]} in this folder; {LORA_FIX}")
    if path.suffix == ".safetensors":
        with open_safetensors(path, LORA_FIX):
            pass
    else:
        read_torch_weights(path, LORA_FIX)
    return path


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
        source = lora if lora is not None else self.lcm_lora_default
        weights = local_lora_file(source, kwargs.get("weight_name"))
        try:
            self.load_lora_weights(source, adapter_name=adapter_name, **kwargs)
        except (RuntimeError, ValueError) as exc:   # tensors of another base model (peft's size mismatch)
            if weights is None:
                raise
            reason = str(exc).strip().splitlines()[-1].strip()
            raise DataError(f"{weights}: does not fit this {type(self).__name__} ({reason}); {LORA_FIX}") from None
        self._scheduler_before_lcm = self.scheduler
        self.scheduler = LCMScheduler.from_config(self.scheduler.config)
        return dict(self.lcm_preset)

    def disable_lcm_lora(self, adapter_name: str = "lcm") -> None:
        """Remove the LCM-LoRA and restore the scheduler that was in use before :meth:`enable_lcm_lora`."""
        self.delete_adapters(adapter_name)
        self.scheduler = self._scheduler_before_lcm
