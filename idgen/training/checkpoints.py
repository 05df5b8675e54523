"""Checkpoints with ``accelerator.save_state``: folders ``checkpoint-<step>`` in the output folder.

accelerate saves the optimizer, learning-rate schedule, gradient scaler and every RNG state; the
hooks registered here add the trainable (LoRA) tensors as safetensors, so a checkpoint holds a few
megabytes instead of a copy of the frozen UNet. :func:`resume` checks every file of a checkpoint
before restoring it, so a damaged or hostile one is refused by name and no pickle in it runs code.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

from ..errors import DataError
from ..io import open_safetensors, read_torch_weights
from .lora import RESUME_ELSEWHERE, TRAINABLE_STATE_NAME, load_trainable_state, save_trainable_state

_NAME = re.compile(r"^checkpoint-(\d+)$")
_COMPLETE = (TRAINABLE_STATE_NAME, "random_states_0.pkl")


def checkpoint_step(folder: str | Path) -> int:
    match = _NAME.match(Path(folder).name)
    if not match:
        raise DataError(f"{folder} is not a checkpoint folder (checkpoint-<step>); {RESUME_ELSEWHERE}")
    return int(match.group(1))


def check_checkpoint(folder: str | Path) -> None:
    """Raise :class:`~idgen.errors.DataError` naming the first file of checkpoint ``folder`` that cannot
    be resumed from: missing, a safetensors file cut short, a pickle (``optimizer.bin``,
    ``scheduler.bin``, ``random_states_0.pkl``, ``custom_checkpoint_0.pkl``: the EMA) that is cut short
    or asks for code. Each pickle is read here with ``torch.load(weights_only=True)`` (allowing the
    numpy RNG types accelerate saves): accelerate reads registered objects such as the EMA without
    that guard, so this check is what keeps a hostile checkpoint from running code."""
    import torch
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such checkpoint folder; {RESUME_ELSEWHERE}")
    checkpoint_step(folder)
    for name in _COMPLETE:
        if not (folder / name).is_file():
            raise DataError(f"{folder}: not a complete checkpoint (no {name}: cut short?); {RESUME_ELSEWHERE}")
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            with open_safetensors(path, RESUME_ELSEWHERE):
                pass
        elif path.suffix in (".bin", ".pkl"):
            with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
                read_torch_weights(path, RESUME_ELSEWHERE)


def resume(accelerator, checkpoint: str | Path) -> int:
    """Restore ``checkpoint`` (:func:`check_checkpoint` first) into what ``accelerator`` prepared and
    registered; returns its step."""
    check_checkpoint(checkpoint)
    accelerator.load_state(str(checkpoint))
    return checkpoint_step(checkpoint)


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
    """Make ``save_state``/``load_state`` carry the trainable tensors of ``models`` (name → module),
    and only them: accelerate's own copy of the modules it prepared is neither written nor read."""

    def save_hook(_prepared, weights, output_dir):
        weights.clear()
        if accelerator.is_main_process:
            save_trainable_state(models, output_dir)

    def load_hook(prepared, input_dir):
        prepared.clear()
        load_trainable_state(models, input_dir)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
