"""LoRA adapters on the UNet's attention (and optionally the text encoder), through peft.

Adapters are added with the models' own ``add_adapter`` (diffusers' and transformers' peft
integrations), so the saved weights are exactly what ``pipe.load_lora_weights(folder)`` reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from diffusers import StableDiffusionPipeline
from diffusers.training_utils import cast_training_params
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig as PeftLoraConfig
from peft.utils import get_peft_model_state_dict

from ..io import LORA_WEIGHT_NAME, check_weights, read_safetensors, save_safetensors_atomic
from .config import GeneratorLoraConfig, OptimConfig
from .components import Components

TRAINABLE_STATE_NAME = "trainable_parameters.safetensors"
#: What to do about a checkpoint that cannot be resumed from.
RESUME_ELSEWHERE = "resume from another checkpoint (--resume checkpoint-<step>), or start again without --resume"


def add_lora(model: torch.nn.Module, config: GeneratorLoraConfig, targets: list[str]) -> list[torch.nn.Parameter]:
    """Freeze ``model`` and give it a LoRA adapter named ``default``; returns its trainable parameters."""
    model.requires_grad_(False)
    model.add_adapter(PeftLoraConfig(r=config.rank, lora_alpha=config.alpha or config.rank,
                                     lora_dropout=config.dropout, init_lora_weights="gaussian",
                                     target_modules=list(targets)))
    return [p for p in model.parameters() if p.requires_grad]


def add_training_lora(parts: Components, lora: GeneratorLoraConfig, optim: OptimConfig) -> tuple[list[dict], dict]:
    """LoRA on the UNet (and, with ``lora.text_encoder``, the text encoder) for training: returns the
    optimizer's parameter groups (one learning rate each) and the adapted models by name. The LoRA
    weights are fp32 whatever dtype the frozen weights are in, so small updates are not rounded away."""
    groups = [{"params": add_lora(parts.unet, lora, lora.unet_targets), "lr": optim.learning_rate}]
    models = {"unet": parts.unet, "text_encoder": None}
    if lora.text_encoder:
        groups.append({"params": add_lora(parts.text_encoder, lora, lora.text_encoder_targets),
                       "lr": optim.text_encoder_learning_rate or optim.learning_rate})
        models["text_encoder"] = parts.text_encoder
    cast_training_params([m for m in models.values() if m is not None], torch.float32)
    return groups, models


def trainable_state(models: dict[str, Optional[torch.nn.Module]]) -> dict[str, torch.Tensor]:
    """Every trainable tensor, keyed ``<model>.<parameter name>``: what a checkpoint must restore."""
    return {f"{name}.{key}": p.detach().float().cpu().contiguous()
            for name, model in models.items() if model is not None
            for key, p in model.named_parameters() if p.requires_grad}


def save_trainable_state(models: dict, folder: str | os.PathLike) -> None:
    save_safetensors_atomic(trainable_state(models), Path(folder) / TRAINABLE_STATE_NAME)


def load_trainable_state(models: dict, folder: str | os.PathLike) -> None:
    """Copy a checkpoint's trainable tensors back in place; every one must match by name and shape and
    be finite, or a :class:`~idgen.errors.DataError` names the file and the tensors that differ."""
    path = Path(folder) / TRAINABLE_STATE_NAME
    saved = read_safetensors(path, RESUME_ELSEWHERE)
    check_weights(saved, {k: v.shape for k, v in trainable_state(models).items()}, path,
                  "this run's trainable tensors (was it made with a different lora config?)", RESUME_ELSEWHERE)
    with torch.no_grad():
        for name, model in models.items():
            if model is None:
                continue
            for key, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(saved[f"{name}.{key}"].to(p.dtype))


def save_lora_weights(folder: str | os.PathLike, unet: torch.nn.Module,
                      text_encoder: Optional[torch.nn.Module] = None) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` in the diffusers format (with peft's adapter
    config as metadata, so rank and alpha survive) via diffusers' own writer, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
              "unet_lora_adapter_metadata": unet.peft_config["default"].to_dict()}
    if text_encoder is not None:
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
        layers["text_encoder_lora_adapter_metadata"] = text_encoder.peft_config["default"].to_dict()
    with tempfile.TemporaryDirectory(dir=folder, prefix=".lora-") as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, safe_serialization=True, **layers)
        os.replace(Path(tmp) / LORA_WEIGHT_NAME, folder / LORA_WEIGHT_NAME)
    return folder / LORA_WEIGHT_NAME
