"""Arc2Face's published extensions beyond the identity (all in ``FoivosPar/Arc2Face``):

- the **Expression Adapter** (``exp_adapter/exp_adapter.bin``): a diffusers IP-Adapter whose "image
  embeds" are FLAME expression parameters, 55 numbers per image (50 expression, 2 eyelid, 3 jaw; see
  :mod:`idgen.faces.expression`); the unconditional half of classifier-free guidance gets zeros;
- the **Reference Adapter** (``ref_adapter/pytorch_lora_weights.safetensors``): a LoRA on the UNet
  plus *reference attention*: one UNet pass over a photo's latents at timestep 0 records the input
  of every self-attention layer, and while denoising, the conditional half of the batch attends to
  its own tokens and the recorded ones, so the output keeps the photo's appearance and background.

The ControlNet (``controlnet/``) needs nothing here: it is diffusers' own ControlNet pipeline
(:class:`~idgen.pipelines.Arc2FaceControlNetPipeline`).
"""

from __future__ import annotations

import contextlib

import torch

#: Where the published files are, relative to the Arc2Face checkpoint folder or hub id.
EXPRESSION_ADAPTER = ("exp_adapter", "exp_adapter.bin")
REFERENCE_ADAPTER = ("ref_adapter", "pytorch_lora_weights.safetensors")
CONTROLNET_FOLDER = "controlnet"
#: The LoRA adapter name the Reference Adapter is loaded under.
REFERENCE_LORA = "reference"
#: The Reference Adapter's LoRA weight the reference demo advises (lower: closer to the asked expression).
DEFAULT_REFERENCE_SCALE = 0.8


def rows_per_image(rows: torch.Tensor, identities: int, images_per_identity: int, name: str) -> torch.Tensor:
    """``rows`` (one for every image, one per identity, or one for all) as one row per image, in the
    pipelines' order (identity 0's images first)."""
    images = identities * images_per_identity
    if len(rows) == images:
        return rows
    if len(rows) == identities:
        return rows.repeat_interleave(images_per_identity, dim=0)
    if len(rows) == 1:
        return rows.expand(images, -1)
    raise ValueError(f"{name} has {len(rows)} rows; give 1, one per identity ({identities}) or one per image ({images})")


class _ReferenceAttention:
    """Wraps one self-attention processor of the UNet. Writing, it records its input (the layer's
    normalised hidden states) in ``bank``; reading, the last ``len(recorded)`` samples of the batch
    (the conditional half under classifier-free guidance, else all) attend to their own tokens
    followed by the recorded ones; the rest run unchanged."""

    def __init__(self, processor, bank: dict, name: str, write: bool):
        self.processor, self.bank, self.name, self.write = processor, bank, name, write

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        if self.write:
            self.bank[self.name] = hidden_states
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        recorded = self.bank[self.name]
        plain, guided = hidden_states[:-len(recorded)], hidden_states[-len(recorded):]
        context = torch.cat([guided, recorded.to(guided.dtype)], dim=1)
        out = self.processor(attn, guided, context, attention_mask, temb)
        if len(plain):
            out = torch.cat([self.processor(attn, plain, None, attention_mask, temb), out])
        return out


def _self_attention(name: str) -> bool:
    return name.endswith("attn1.processor") and ".transformer_blocks." in name


@contextlib.contextmanager
def reference_attention(unet, write: bool, bank: dict):
    """Inside the block, ``unet``'s self-attention layers write to (``write=True``) or read from
    ``bank`` (see :class:`_ReferenceAttention`); its processors are restored on the way out."""
    processors = unet.attn_processors
    unet.set_attn_processor({name: _ReferenceAttention(processor, bank, name, write) if _self_attention(name)
                             else processor for name, processor in processors.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(processors)


def _lora_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in model.modules() if isinstance(module, BaseTunerLayer)]


def activate(model, adapters: list[str]) -> None:
    """Make exactly ``adapters`` the active LoRAs of ``model``, each at the weight it had."""
    for layer in _lora_layers(model):
        layer.set_adapter(adapters)


@contextlib.contextmanager
def lora_weight(model, adapter: str, weight: float):
    """Inside the block, the LoRA ``adapter`` of ``model`` acts at ``weight`` (as ``set_adapters``'
    weights do), active together with the adapters active before (whatever ``set_adapters`` or a
    later LoRA left active); afterwards its scale and the active set are as they were."""
    layers = [(layer, layer.scaling[adapter], list(layer.active_adapters))
              for layer in _lora_layers(model) if adapter in getattr(layer, "scaling", {})]
    for layer, _, active in layers:
        layer.set_scale(adapter, weight)
        if weight and adapter not in active:
            layer.set_adapter([*active, adapter])
    try:
        yield
    finally:
        for layer, scaling, active in layers:
            layer.scaling[adapter] = scaling
            if list(layer.active_adapters) != active:
                layer.set_adapter(active)


@contextlib.contextmanager
def loras_off(model):
    """Inside the block, no LoRA of ``model`` acts; each layer is as enabled as before afterwards."""
    layers = [(layer, layer.disable_adapters) for layer in _lora_layers(model)]
    for layer, _ in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, disabled in layers:
            layer.enable_adapters(not disabled)
