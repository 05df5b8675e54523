"""InfiniteYou's identity projection: a Perceiver Resampler from one face embedding to 8 FLUX text-width tokens.

InfiniteYou (ByteDance, arXiv 2503.16418) feeds these tokens to InfuseNet — a Flux ControlNet — in
place of the prompt, so the identity reaches FLUX only through the ControlNet's residuals. The
published ``infu_flux_v1.0/<variant>/image_proj_model.bin`` holds the Resampler of IP-Adapter Plus
(the ``image_proj`` entry: latents, ``proj_in``, four attention + feed-forward layers, ``proj_out``,
``norm_out``) at width 1280, 20 heads of 64, 8 queries, 512-d input and 4096-d output. diffusers
already implements that network as :class:`~diffusers.models.embeddings.IPAdapterPlusImageProjection`;
this module wraps it as a diffusers model, so that it saves and loads with the pipeline, and renames
the published tensors into it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from diffusers.models.modeling_utils import ModelMixin
from huggingface_hub import hf_hub_download

from idgen.errors import ConfigError, ModelFilesMissingError
from idgen.io import read_torch_weights

#: The hub repository and the file layout of the published weights.
INFINITEYOU_REPO = "ByteDance/InfiniteYou"
INFINITEYOU_VARIANTS = ("aes_stage2", "sim_stage1")


def infiniteyou_subfolder(variant: str = "aes_stage2", version: str = "v1.0") -> str:
    """``infu_flux_v1.0/aes_stage2``: where one variant's projection and InfuseNet live in the repository."""
    if variant not in INFINITEYOU_VARIANTS:
        raise ConfigError(f"unknown InfiniteYou variant {variant!r}; choose one of {', '.join(INFINITEYOU_VARIANTS)}")
    return f"infu_flux_{version}/{variant}"


def convert_resampler_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published Resampler tensors under :class:`IPAdapterPlusImageProjection`'s names.

    Per layer ``i``: ``layers.i.0`` is the attention (``norm1``/``norm2`` → ``ln0``/``ln1``, the fused
    ``to_kv`` split in halves into ``to_k`` and ``to_v``, ``to_out`` → ``to_out.0``) and
    ``layers.i.1`` the feed-forward (LayerNorm, Linear, GELU, Linear → ``ff.0``, ``ff.1.net.0.proj``,
    ``ff.1.net.2``). Tensors are not changed, only renamed or split.
    """
    renames = {"0.norm1": "ln0", "0.norm2": "ln1", "0.to_q": "attn.to_q", "0.to_out": "attn.to_out.0",
               "1.0": "ff.0", "1.1": "ff.1.net.0.proj", "1.3": "ff.1.net.2"}
    converted = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "layers":
            converted[key] = value
            continue
        prefix, inner, leaf = ".".join(parts[:2]), ".".join(parts[2:-1]), parts[-1]
        if inner == "0.to_kv":
            key_half, value_half = value.chunk(2, dim=0)
            converted[f"{prefix}.attn.to_k.{leaf}"] = key_half
            converted[f"{prefix}.attn.to_v.{leaf}"] = value_half
        elif inner in renames:
            converted[f"{prefix}.{renames[inner]}.{leaf}"] = value
        else:
            raise ConfigError(f"unexpected tensor {key!r} in an InfiniteYou image projection")
    return converted


class InfiniteYouProjection(ModelMixin, ConfigMixin):
    """Face embedding (N × 512, L2-normalised) → identity tokens (N × 8 × 4096).

    The defaults are the published architecture. :meth:`from_infiniteyou` reads the original
    ``image_proj_model.bin``; ``save_pretrained`` / ``from_pretrained`` use safetensors.
    """

    @register_to_config
    def __init__(self, embedding_dim: int = 512, hidden_dim: int = 1280, output_dim: int = 4096, depth: int = 4,
                 heads: int = 20, head_dim: int = 64, num_tokens: int = 8, ff_mult: int = 4):
        super().__init__()
        self.resampler = IPAdapterPlusImageProjection(
            embed_dims=embedding_dim, output_dims=output_dim, hidden_dims=hidden_dim, depth=depth,
            dim_head=head_dim, heads=heads, num_queries=num_tokens, ffn_ratio=ff_mult)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``embeddings`` (N × D) → tokens (N × num_tokens × output_dim)."""
        return self.resampler(embeddings[:, None, :])

    @classmethod
    def from_original_state_dict(cls, state: dict[str, torch.Tensor], source: str = "the state dict"):
        """A projection holding the published tensors (the ``image_proj`` entry of the ``.bin``); the
        architecture (widths, depth, queries) is read from the tensors' shapes, heads of 64 assumed."""
        try:
            hidden_dim, embedding_dim = state["proj_in.weight"].shape
            output_dim = state["proj_out.weight"].shape[0]
            num_tokens = state["latents"].shape[1]
            depth = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("layers."))
            inner = state["layers.0.0.to_q.weight"].shape[0]
            ff_mult = state["layers.0.1.1.weight"].shape[0] // hidden_dim
        except (KeyError, ValueError, IndexError) as error:
            raise ConfigError(f"{source} is not an InfiniteYou image projection (missing or misshapen {error})") from error
        model = cls(embedding_dim=embedding_dim, hidden_dim=hidden_dim, output_dim=output_dim, depth=depth,
                    heads=inner // 64, head_dim=64, num_tokens=num_tokens, ff_mult=ff_mult)
        converted = {f"resampler.{key}": value for key, value in convert_resampler_state_dict(state).items()}
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{source} does not fit the Resampler: missing {sorted(missing)[:4]}, "
                              f"unexpected {sorted(unexpected)[:4]}")
        return model

    @classmethod
    def from_infiniteyou(cls, pretrained_model_name_or_path: Union[str, os.PathLike] = INFINITEYOU_REPO, *,
                         variant: str = "aes_stage2", weight_name: str = "image_proj_model.bin",
                         subfolder: str | None = None, **hub_kwargs) -> "InfiniteYouProjection":
        """Load the published ``image_proj_model.bin`` by hub id or from a local copy of the repository
        (``subfolder`` defaults to ``infu_flux_v1.0/<variant>``). Read with
        ``torch.load(weights_only=True)``: tensors only, no code runs."""
        subfolder = infiniteyou_subfolder(variant) if subfolder is None else subfolder
        path = Path(pretrained_model_name_or_path) / subfolder / weight_name
        if not path.is_file():
            if Path(pretrained_model_name_or_path).exists():
                raise ModelFilesMissingError(f"{path} does not exist; pass the folder of a download of "
                                             f"{INFINITEYOU_REPO} (it holds {subfolder}/{weight_name})")
            try:
                path = Path(hf_hub_download(os.fspath(pretrained_model_name_or_path), weight_name,
                                            subfolder=subfolder, **hub_kwargs))
            except Exception as error:  # offline, gated, or no such repository: say what to download
                raise ModelFilesMissingError(
                    f"cannot get {subfolder}/{weight_name} from {pretrained_model_name_or_path}: {error}; "
                    f"download {INFINITEYOU_REPO} and pass its folder") from error
        state = read_torch_weights(path, f"download {INFINITEYOU_REPO} again and pass its folder")
        if isinstance(state, dict) and "image_proj" in state:
            state = state["image_proj"]
        return cls.from_original_state_dict(state, source=os.fspath(path))


def convert_infiniteyou_projection(source: Union[str, os.PathLike], target: Union[str, os.PathLike]) -> None:
    """Write a published ``image_proj_model.bin`` as a ``save_pretrained`` folder (``config.json`` +
    safetensors) that :meth:`InfiniteYouProjection.from_pretrained` loads without unpickling."""
    source = Path(source)
    model = InfiniteYouProjection.from_infiniteyou(source.parent, subfolder="", weight_name=source.name)
    model.save_pretrained(target)
