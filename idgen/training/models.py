"""Load the diffusion components a run trains on, and turn a batch into UNet conditioning.

Components load with ``from_pretrained`` from a diffusers folder or hub id (SD 1.5) and, for
Arc2Face, its fine-tuned ``arc2face/`` UNet and ``encoder/`` text encoder — exactly what the
pipelines load, so a LoRA trained here drops into them. A folder written by ``save_pretrained`` of
any SD-1.5-shaped pipeline (tests use a tiny random one) works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextModel, CLIPTokenizer

from ..pipelines import Arc2FacePipeline
from .config import ModelConfig


#: ``optim.mixed_precision`` → the dtype the frozen weights are kept in.
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Components:
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL
    noise_scheduler: DDPMScheduler  # the forward (noising) process used by the loss

    def freeze(self, device, mixed_precision: str = "no") -> "Components":
        """No gradients for the pretrained weights, which move to ``device`` in the dtype of
        ``mixed_precision`` (half the memory in fp16/bf16; LoRA weights added later stay fp32)."""
        for module in (self.unet, self.text_encoder, self.vae):
            module.requires_grad_(False).to(device, dtype=WEIGHT_DTYPES[mixed_precision])
        return self


def load_components(config: ModelConfig) -> Components:
    base = config.pretrained
    if config.arc2face:
        unet = UNet2DConditionModel.from_pretrained(config.arc2face, subfolder="arc2face")
        text_encoder = CLIPTextModel.from_pretrained(config.arc2face, subfolder="encoder")
    else:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    return Components(unet=unet, text_encoder=text_encoder,
                      tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
                      vae=AutoencoderKL.from_pretrained(base, subfolder="vae"),
                      noise_scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler"))


def build_pipeline(parts: Components, conditioning: str) -> StableDiffusionPipeline:
    """An inference pipeline sharing the training modules (LoRA included), for validation renders
    and prior-preservation images: Arc2Face-style or plain SD, sampling with DPM-Solver++."""
    cls = Arc2FacePipeline if conditioning == "arc2face" else StableDiffusionPipeline
    pipe = cls(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
               scheduler=DPMSolverMultistepScheduler.from_config(parts.noise_scheduler.config),
               safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Conditioning:
    """Batch → ``prompt_embeds`` for the UNet, with classifier-free-guidance dropout.

    ``arc2face``: each example's identity vector through :meth:`Arc2FacePipeline.encode_identity`;
    ``sd``: each example's prompt through the text encoder. Dropped examples get the empty prompt,
    the negative condition used at sampling time.
    """

    def __init__(self, pipe: StableDiffusionPipeline, kind: str):
        self.pipe, self.kind = pipe, kind

    def _text(self, prompts: list[str], device) -> torch.Tensor:
        return self.pipe.encode_prompt(prompts, device, 1, False)[0]

    def __call__(self, batch: dict, device, drop: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.kind == "arc2face":
            embeds = self.pipe.encode_identity(batch["id_embeds"], device=device)
        else:
            embeds = self._text(batch["prompts"], device)
        if drop is not None and bool(drop.any()):
            empty = self._text([""], device).to(embeds.dtype).expand_as(embeds)
            embeds = torch.where(drop.to(device)[:, None, None], empty, embeds)
        return embeds
