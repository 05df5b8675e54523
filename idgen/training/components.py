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
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..pipelines import Arc2FacePipeline
from ..pipelines.pipeline_arc2face import ARC2FACE_PROMPT
from .config import ModelConfig, OptimConfig
from .tokenizer import reduced_clip_tokenizer


#: ``optim.mixed_precision`` → the dtype the frozen weights are kept in.
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Components:
    unet: Optional[UNet2DConditionModel]  # None for ``task: vae``, which trains the VAE alone
    text_encoder: Optional[CLIPTextModel]
    tokenizer: Optional[CLIPTokenizer]
    vae: AutoencoderKL
    noise_scheduler: Optional[DDPMScheduler]  # the forward (noising) process used by the loss

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


def new_components(config: ModelConfig, task: str) -> Components:
    """The networks a full-training task starts from: ``vae`` a fresh ``AutoencoderKL``;
    ``id-model`` a frozen trained VAE with a fresh (or ``init``-loaded) UNet and text encoder."""
    if task == "vae":
        return Components(unet=None, text_encoder=None, tokenizer=None, vae=AutoencoderKL(**config.vae_config),
                          noise_scheduler=None)
    vae = AutoencoderKL.from_pretrained(config.vae).float()
    if config.init:
        # Trained weights stay float32 (mixed precision comes from autocast): transformers 5 would
        # otherwise keep a float16 export's dtype, and float16 Adam steps on the CPU give NaN losses.
        return Components(unet=UNet2DConditionModel.from_pretrained(config.init, subfolder="unet").float(),
                          text_encoder=CLIPTextModel.from_pretrained(config.init, subfolder="text_encoder").float(),
                          tokenizer=CLIPTokenizer.from_pretrained(config.init, subfolder="tokenizer"), vae=vae,
                          noise_scheduler=DDPMScheduler.from_pretrained(config.init, subfolder="scheduler"))
    tokenizer = CLIPTokenizer.from_pretrained(config.tokenizer)
    if config.reduced_vocabulary:
        tokenizer = reduced_clip_tokenizer(tokenizer, ARC2FACE_PROMPT.split())
    text_config = CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, **config.text_encoder_config)
    unet = UNet2DConditionModel(**{"cross_attention_dim": text_config.hidden_size, **config.unet_config})
    return Components(unet=unet, text_encoder=CLIPTextModel(text_config), tokenizer=tokenizer, vae=vae,
                      noise_scheduler=DDPMScheduler(**config.scheduler_config))


def standardize_latents(vae: AutoencoderKL, pixel_batches) -> None:
    """Make the VAE's latents zero-mean and unit-variance per channel, with ``scaling_factor`` 1.

    One ``1 / std`` for all channels (SD's 0.18215) is not enough for a VAE trained from scratch:
    its channels can differ threefold in spread and sit far from zero, so the diffusion noise drowns
    some channels long before others and the sampler starts off-centre (a colour cast). The per-channel
    affine map is folded into the 1×1 ``quant_conv`` (encoder side) and ``post_quant_conv`` (decoder
    side), so ``decode(encode(x))`` is unchanged and any ``StableDiffusionPipeline`` uses the VAE as is.
    """
    if not (vae.config.use_quant_conv and vae.config.use_post_quant_conv):
        raise ValueError("standardize_latents needs an AutoencoderKL with use_quant_conv and use_post_quant_conv")
    with torch.no_grad():
        latents = torch.cat([vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean.float()
                             for x in pixel_batches])
        mean = latents.mean(dim=(0, 2, 3))
        std = latents.std(dim=(0, 2, 3))
        channels = mean.numel()
        quant, post = vae.quant_conv, vae.post_quant_conv  # quant: features → (mean, logvar); post: latent → features
        quant.weight[:channels] /= std[:, None, None, None]  # new latent = (latent − mean) / std
        quant.bias[:channels] = (quant.bias[:channels] - mean) / std
        quant.bias[channels:] -= 2 * torch.log(std)  # the posterior's log-variance scales with it
        post.bias += post.weight[:, :, 0, 0] @ mean  # the decoder sees latent × std + mean again
        post.weight *= std[None, :, None, None]
    vae.register_to_config(scaling_factor=1.0)


def full_training_groups(parts: Components, task: str, optim: OptimConfig, device) -> tuple[list[dict], dict]:
    """Every weight of the networks a full task trains, in fp32 on ``device`` (mixed precision comes
    from autocast): the optimizer's parameter groups and the trained models by name. For
    ``id-model`` the VAE stays frozen in fp32; its latents are the UNet's data."""
    if task == "vae":
        models = {"vae": parts.vae}
        groups = [{"params": list(parts.vae.parameters()), "lr": optim.learning_rate}]
    else:
        parts.vae.requires_grad_(False).to(device)
        models = {"unet": parts.unet, "text_encoder": parts.text_encoder}
        groups = [{"params": list(parts.unet.parameters()), "lr": optim.learning_rate},
                  {"params": list(parts.text_encoder.parameters()),
                   "lr": optim.text_encoder_learning_rate or optim.learning_rate}]
    for model in models.values():
        model.requires_grad_(True).to(device)
    return groups, models


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
