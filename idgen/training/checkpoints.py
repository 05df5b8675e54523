"""Checkpoints with ``accelerator.save_state``: folders ``checkpoint-<step>`` in the output folder.

accelerate saves the optimizer, learning-rate schedule, gradient scaler and every RNG state; the
hooks registered here add the trainable (LoRA) tensors as safetensors, so a checkpoint holds a few
megabytes instead of a copy of the frozen UNet.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

from .lora import TRAINABLE_STATE_NAME, load_trainable_state, save_trainable_state

_NAME = re.compile(r"^checkpoint-(\d+)$")
_COMPLETE = (TRAINABLE_STATE_NAME, "random_states_0.pkl")


def checkpoint_step(folder: str | Path) -> int:
    match = _NAME.match(Path(folder).name)
    if not match:
        raise ValueError(f"{folder} is not a checkpoint folder (checkpoint-<step>)")
    return int(match.group(1))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder missing its trainable state or accelerate's RNG
    states, written last, was cut short)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*")
             if _NAME.match(p.name) and all((p / name).exists() for name in _COMPLETE)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: str | Path, keep: Optional[int]) -> None:
    if keep is None:
        return
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else list_checkpoints(output_dir):
        shutil.rmtree(old)


def register_trainable_state(accelerator, models: dict) -> None:
    """Make ``save_state``/``load_state`` carry the trainable tensors of ``models`` (name → module)."""

    def save_hook(_models, _weights, output_dir):
        if accelerator.is_main_process:
            save_trainable_state(models, output_dir)

    def load_hook(_models, input_dir):
        load_trainable_state(models, input_dir)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
