"""Arc2Face's published extensions beyond the identity (all in ``FoivosPar/Arc2Face``):

- the **Expression Adapter** (``exp_adapter/exp_adapter.bin``): a diffusers IP-Adapter whose "image
  embeds" are FLAME expression parameters, :data:`EXPRESSION_SIZE` numbers per image (50 expression,
  2 eyelid, 3 jaw); the unconditional half of classifier-free guidance gets zeros;
- the **Reference Adapter** (``ref_adapter/pytorch_lora_weights.safetensors``): a LoRA on the UNet
  plus *reference attention*: one UNet pass over a photo's latents at timestep 0 records the input
  of every self-attention layer, and while denoising, the conditional half of the batch attends to
  its own tokens and the recorded ones, so the output keeps the photo's appearance and background.

The ControlNet (``controlnet/``) needs nothing here: it is diffusers' own ControlNet pipeline
(:class:`~idgen.pipelines.Arc2FaceControlNetPipeline`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from idgen.errors import DataError
from idgen.io import read_npy

#: FLAME parameters per image: 50 expression, 2 eyelid, 3 jaw (SMIRK's order).
EXPRESSION_SIZE = 55
#: Where the published files are, relative to the Arc2Face checkpoint folder or hub id.
EXPRESSION_ADAPTER = ("exp_adapter", "exp_adapter.bin")
REFERENCE_ADAPTER = ("ref_adapter", "pytorch_lora_weights.safetensors")
CONTROLNET_FOLDER = "controlnet"
#: The LoRA adapter name the Reference Adapter is loaded under.
REFERENCE_LORA = "reference"
#: The Reference Adapter's LoRA weight the reference demo advises (lower: closer to the asked expression).
DEFAULT_REFERENCE_SCALE = 0.8

EXPRESSION_FIX = (f"give {EXPRESSION_SIZE} FLAME parameters per expression (50 expression, 2 eyelid, 3 jaw): a .npy "
                  f"array of shape ({EXPRESSION_SIZE},) or (K, {EXPRESSION_SIZE}), or a .json list of such lists")


def expression_rows(expression) -> torch.Tensor:
    """``expression`` (a tensor, array or list: one vector of :data:`EXPRESSION_SIZE` numbers, or ``K``
    of them) as a ``K × 55`` float32 tensor; a ``ValueError`` for any other shape or non-finite values."""
    rows = torch.as_tensor(np.asarray(expression.detach().cpu() if torch.is_tensor(expression) else expression,
                                      dtype=np.float32))
    if rows.ndim not in (1, 2) or rows.shape[-1] != EXPRESSION_SIZE or rows.numel() == 0:
        raise ValueError(f"expression has shape {tuple(rows.shape)}; {EXPRESSION_FIX}")
    if not torch.isfinite(rows).all():
        raise ValueError("expression holds NaN or infinite values")
    return rows.reshape(-1, EXPRESSION_SIZE)


def read_expressions(path: str | os.PathLike) -> np.ndarray:
    """The ``K × 55`` FLAME expression vectors in a ``.npy`` or ``.json`` file; a
    :class:`~idgen.errors.DataError` naming the file when it holds anything else."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        values = read_npy(path, EXPRESSION_FIX)
    elif path.suffix.lower() == ".json":
        try:
            values = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: cannot read it as JSON ({exc}); {EXPRESSION_FIX}") from None
    else:
        raise DataError(f"{path}: expressions are read from .npy or .json files; {EXPRESSION_FIX}")
    try:
        return expression_rows(values).numpy()
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {exc}" if str(exc).startswith("expression") else
                        f"{path}: not a list of numbers; {EXPRESSION_FIX}") from None


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


@contextlib.contextmanager
def lora_weight(model, adapter: str, weight: float):
    """Inside the block, the LoRA ``adapter`` of ``model`` acts at ``weight`` (as ``set_adapters``'
    weights do); its scale is restored afterwards, and the other adapters are untouched."""
    layers = [(layer, layer.scaling[adapter]) for layer in _lora_layers(model) if adapter in getattr(layer, "scaling", {})]
    for layer, _ in layers:
        layer.set_scale(adapter, weight)
    try:
        yield
    finally:
        for layer, scaling in layers:
            layer.scaling[adapter] = scaling


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
