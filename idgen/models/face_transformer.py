"""Face Transformer: a ViT over aligned face crops with a margin-softmax classification head.

The recogniser of Zhong & Deng ("Face Transformer for Recognition", 2021) that GS-LoRA edits: the
aligned crop is cut into patches, a class token and learned position embeddings are added, pre-norm
transformer blocks (multi-head attention, then a GELU feed-forward network) mix them, and the class
token's output, projected to ``embedding_dim``, is the identity embedding. Training uses a CosFace or
ArcFace margin head; at test time the head's plain scaled cosines are the class logits.

Size is configuration: :data:`PRESETS` holds the paper's size and small CPU presets. A recogniser is
saved as ``config.json`` + ``model.safetensors`` in a folder (:meth:`FaceRecognizer.save_pretrained`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CROP_SIDE, EMBEDDING_DIM, Range, check_ranges, ranged
from ..errors import ConfigError, ModelFilesMissingError
from ..io import load_module_weights
from .backbones import save_recognizer
from .heads import MarginHead

#: The ``architecture`` its folders record.
ARCHITECTURE = "face-transformer"


@dataclass
class FaceTransformerConfig:
    """The sizes of a Face Transformer. The caps bound its memory: the attention of one image compares
    each of its (resolution / patch_size)² patches (at most 4096) with every other, and the widths
    multiply the parameter count."""

    resolution: int = ranged(112, CROP_SIDE)
    channels: int = ranged(3, Range(1, 4))
    patch_size: int = ranged(8, Range(1, 64))
    dim: int = ranged(512, Range(1, 4096))
    depth: int = ranged(6, Range(1, 64))
    heads: int = ranged(8, Range(1, 64))
    mlp_dim: int = ranged(2048, Range(1, 16384))
    embedding_dim: int = ranged(512, EMBEDDING_DIM)
    num_classes: int = ranged(100, Range(2, 1_000_000))
    head: str = "cosface"  # or "arcface"
    scale: float = ranged(64.0, Range(above=0))
    margin: float = ranged(0.35, Range(0))
    dropout: float = ranged(0.0, Range(0, below=1))

    def __post_init__(self):
        check_ranges(self)
        if (self.resolution // self.patch_size) ** 2 > 4096:
            raise ConfigError(f"resolution {self.resolution} / patch_size {self.patch_size} makes "
                              f"{(self.resolution // self.patch_size) ** 2} patches; at most 4096 (64 × 64)")
        if self.resolution % self.patch_size:
            raise ConfigError(f"resolution {self.resolution} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.head not in ("cosface", "arcface"):
            raise ConfigError(f"head must be 'cosface' or 'arcface', not {self.head!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "FaceTransformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


#: Named sizes. ``paper`` is the GS-LoRA Face Transformer; the others are small enough for a CPU.
PRESETS: dict[str, dict] = {
    "paper": dict(resolution=112, patch_size=8, dim=512, depth=6, heads=8, mlp_dim=2048, embedding_dim=512),
    "cpu-small": dict(resolution=40, patch_size=8, dim=128, depth=4, heads=4, mlp_dim=512, embedding_dim=128),
    "cpu-tiny": dict(resolution=32, patch_size=8, dim=96, depth=4, heads=4, mlp_dim=384, embedding_dim=64),
}


def model_config(preset: str | None = None, **overrides) -> FaceTransformerConfig:
    """A config from a preset name plus overrides (``overrides`` win)."""
    values = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
        values.update(PRESETS[preset])
    values.update(overrides)
    return FaceTransformerConfig.from_dict(values)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """The block's FFN: the two linears GS-LoRA adapts."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, config: FaceTransformerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads, config.dropout)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.mlp_dim, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FaceRecognizer(nn.Module):
    """Face Transformer backbone (``embed``) + margin head (``forward`` gives class logits)."""

    def __init__(self, config: FaceTransformerConfig):
        super().__init__()
        self.config = config
        patches = (config.resolution // config.patch_size) ** 2
        self.patch_embed = nn.Conv2d(config.channels, config.dim, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, config.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.to_embedding = nn.Linear(config.dim, config.embedding_dim)
        self.head = MarginHead(config.embedding_dim, config.num_classes, config.head, config.scale, config.margin)
        self.apply(_init_weights)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Identity embeddings (not normalised) of images scaled to [-1, 1], shape N×C×H×W."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.to_embedding(self.norm(x[:, 0]))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(images), labels)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike, class_names: list[str] | None = None, **record) -> None:
        """The recogniser folder every backbone writes (:func:`idgen.models.save_recognizer`), architecture
        ``face-transformer``, with the class names and ``record`` (e.g. the training options) in ``config.json``."""
        extra = {"class_names": list(class_names)} if class_names is not None else {}
        save_recognizer(folder, ARCHITECTURE, self, asdict(self.config), **extra, **record)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "FaceRecognizer":
        """A folder :meth:`save_pretrained` wrote."""
        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise ModelFilesMissingError(
                    f"{folder / name} is missing; train one with `idgen recognizer train --architecture face-transformer` first")
        config = json.loads((folder / "config.json").read_text())
        if config.get("architecture") != ARCHITECTURE:
            raise ModelFilesMissingError(f"{folder} holds a {config.get('architecture')} recogniser, not a Face "
                                         "Transformer (`idgen recognizer train --architecture face-transformer`)")
        model = cls(FaceTransformerConfig.from_dict(config["model"]))
        load_module_weights(model, folder / "model.safetensors", "the Face Transformer config.json describes",
                            "train it again (`idgen recognizer train --architecture face-transformer`) or copy the folder again")
        model.class_names = config.get("class_names")
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
