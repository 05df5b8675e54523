"""EdgeFace (Otroshi George et al., IEEE T-BIOM 2024) in plain torch: an efficient face recogniser.

EdgeFace is the EdgeNeXt image classifier (Maaz et al., 2022) turned into a 512-d embedding network:
a 4×4 patch stem, four stages (a 2×2 downsampling convolution before each but the first), then
average pooling, a layer norm and a linear layer to the embedding. A stage holds *convolution
blocks* (depthwise k×k convolution, then an inverted-bottleneck MLP over channels, scaled and added
back) and ends with one *split-transpose block* (stages 2–4): its channels are split into groups
that pass through a cascade of 3×3 depthwise convolutions, then cross-covariance attention (XCA:
attention between channels, not positions) and an MLP, each scaled and added back. Stage 2's
split-transpose block adds a Fourier positional encoding.

Its ``_gamma_`` variants replace every linear layer, the embedding layer included, by
:class:`LoRaLin`: two linear layers through ``rank = max(2, int(γ · min(in, out)))`` features, the
paper's low-rank factorisation. :data:`VARIANTS` holds the four published networks whose
checkpoints are plain state dicts (the ``_q`` ones are dynamically quantised and not loadable here).

Tensor names are those of the published ``otroshi/edgeface`` checkpoints (``edgeface_xs_gamma_06.pt``:
``model.stem.0.weight``, ``model.stages.1.blocks.2.xca.qkv.linear1.weight``, …), so
:func:`load_edgeface` reads one unchanged. Input: aligned 112×112 RGB crops in [-1, 1]
(:func:`idgen.models.to_tensor`), as EdgeFace normalises them (mean 0.5, std 0.5).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..io import check_weights, read_torch_weights

ARCHITECTURE = "edgeface"


@dataclass(frozen=True)
class EdgeFaceVariant:
    """The sizes of one published EdgeFace: channels and blocks per stage, attention heads, and the
    low-rank ratio γ (``None``: plain linear layers)."""

    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: int
    rank_ratio: float | None


#: The published EdgeFace networks by the name of their checkpoint (``edgeface_<name>.pt``).
VARIANTS = {
    "xxs": EdgeFaceVariant((24, 48, 88, 168), (2, 2, 6, 2), 4, None),
    "xs_gamma_06": EdgeFaceVariant((32, 64, 100, 192), (3, 3, 9, 3), 4, 0.6),
    "s_gamma_05": EdgeFaceVariant((48, 96, 160, 304), (3, 3, 9, 3), 8, 0.5),
    "base": EdgeFaceVariant((80, 160, 288, 584), (3, 3, 9, 3), 8, None),
}
#: Per stage: depthwise kernel of the convolution blocks, channel groups of the split-transpose
#: block, whether that block adds a positional encoding (the same in every variant).
KERNELS = (3, 5, 7, 9)
SPLITS = (2, 2, 3, 4)
POSITIONAL = (False, True, False, False)
#: Layer-scale start value of every residual branch, the MLP's expansion, the norms' epsilon.
LAYER_SCALE = 1e-6
EXPANSION = 4
EPS = 1e-6


class LoRaLin(nn.Module):
    """A linear layer factorised through ``rank`` features: ``linear2(linear1(x))`` (only
    ``linear2`` has a bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


def linear(in_features: int, out_features: int, rank_ratio: float | None, bias: bool = True) -> nn.Module:
    """``nn.Linear``, or with a ``rank_ratio`` γ its :class:`LoRaLin` of rank ``max(2, int(γ·min(in, out)))``."""
    if rank_ratio is None:
        return nn.Linear(in_features, out_features, bias=bias)
    return LoRaLin(in_features, out_features, max(2, int(min(in_features, out_features) * rank_ratio)), bias)


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels of an N×C×H×W map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def depthwise(channels: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)


class Mlp(nn.Module):
    """The inverted bottleneck over channels: ``fc1`` (×4), GELU, ``fc2``."""

    def __init__(self, dim: int, rank_ratio: float | None):
        super().__init__()
        self.fc1 = linear(dim, EXPANSION * dim, rank_ratio)
        self.fc2 = linear(EXPANSION * dim, dim, rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConvBlock(nn.Module):
    """Depthwise k×k convolution, layer norm, MLP, times a learned per-channel scale, plus the input."""

    def __init__(self, dim: int, kernel: int, rank_ratio: float | None):
        super().__init__()
        self.conv_dw = depthwise(dim, kernel)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, rank_ratio)
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1)))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class PositionalEncodingFourier(nn.Module):
    """Sine/cosine features of each position's normalised (y, x), 32 frequencies each, projected
    to the block's channels by a 1×1 convolution."""

    def __init__(self, dim: int, hidden: int = 32, temperature: float = 10000.0):
        super().__init__()
        self.token_projection = nn.Conv2d(2 * hidden, dim, 1)
        self.hidden, self.temperature = hidden, temperature

    def forward(self, batch: int, height: int, width: int) -> torch.Tensor:
        """N×C×H×W positional features."""
        device = self.token_projection.weight.device
        ys = torch.arange(1, height + 1, device=device, dtype=torch.float32) / (height + 1e-6) * 2 * math.pi
        xs = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + 1e-6) * 2 * math.pi
        steps = torch.arange(self.hidden, device=device, dtype=torch.float32)
        periods = self.temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / self.hidden)

        def features(values: torch.Tensor) -> torch.Tensor:   # L -> L×hidden: sin, cos interleaved
            angles = values[:, None] / periods
            return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

        grid = torch.cat((features(ys)[:, None, :].expand(height, width, -1),
                          features(xs)[None, :, :].expand(height, width, -1)), dim=2)
        grid = grid.permute(2, 0, 1)[None].expand(batch, -1, -1, -1)
        return self.token_projection(grid.to(self.token_projection.weight.dtype))


class CrossCovarianceAttention(nn.Module):
    """XCA: per head, a softmax over the cosine similarities between channels (L2-normalised over
    the positions), times a learned temperature, applied to the values."""

    def __init__(self, dim: int, heads: int, rank_ratio: float | None):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = linear(dim, 3 * dim, rank_ratio)
        self.proj = linear(dim, dim, rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×L×C -> N×L×C."""
        n, tokens, channels = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.heads, -1).permute(2, 0, 3, 4, 1)
        attention = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        out = attention.softmax(dim=-1) @ v
        return self.proj(out.permute(0, 3, 1, 2).reshape(n, tokens, channels))


class SplitTransposeBlock(nn.Module):
    """The channels in ``splits`` groups: each but the last, plus the previous group's output, through
    a 3×3 depthwise convolution; then (positional encoding,) XCA and an MLP, each a scaled residual."""

    def __init__(self, dim: int, splits: int, heads: int, positional: bool, rank_ratio: float | None):
        super().__init__()
        width = math.ceil(dim / splits)
        self.convs = nn.ModuleList(depthwise(width, 3) for _ in range(max(1, splits - 1)))
        self.pos_embd = PositionalEncodingFourier(dim) if positional else None
        self.norm_xca = nn.LayerNorm(dim, eps=EPS)
        self.gamma_xca = nn.Parameter(torch.full((dim,), LAYER_SCALE))
        self.xca = CrossCovarianceAttention(dim, heads, rank_ratio)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, rank_ratio)
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(len(self.convs) + 1, dim=1)
        outputs, carried = [], parts[0]
        for index, conv in enumerate(self.convs):
            carried = conv(carried if index == 0 else carried + parts[index])
            outputs.append(carried)
        y = torch.cat([*outputs, parts[-1]], dim=1)
        n, channels, height, width = y.shape
        if self.pos_embd is not None:
            y = y + self.pos_embd(n, height, width)
        tokens = y.flatten(2).transpose(1, 2)
        tokens = tokens + self.gamma_xca * self.xca(self.norm_xca(tokens))
        tokens = self.gamma * self.mlp(self.norm(tokens))
        return x + tokens.transpose(1, 2).reshape(n, channels, height, width)


class Stage(nn.Module):
    """(Layer norm + 2×2 stride-2 convolution,) convolution blocks, one split-transpose block (stages 2–4)."""

    def __init__(self, index: int, cin: int, variant: EdgeFaceVariant):
        super().__init__()
        dim, depth, ratio = variant.dims[index], variant.depths[index], variant.rank_ratio
        self.downsample = (nn.Identity() if index == 0 else
                           nn.Sequential(LayerNorm2d(cin, eps=EPS), nn.Conv2d(cin, dim, 2, stride=2)))
        convolutional = depth - (0 if index == 0 else 1)
        blocks = [ConvBlock(dim, KERNELS[index], ratio) for _ in range(convolutional)]
        if index:
            blocks.append(SplitTransposeBlock(dim, SPLITS[index], variant.heads, POSITIONAL[index], ratio))
        self.blocks = nn.ModuleList(blocks)   # a list, so that GS-LoRA finds its transformer-style blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class EmbeddingHead(nn.Module):
    """Global average pooling, layer norm, the linear (or low-rank) layer to the embedding."""

    def __init__(self, dim: int, embedding_size: int, rank_ratio: float | None):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=EPS)
        self.fc = linear(dim, embedding_size, rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean((2, 3), keepdim=True)).flatten(1))


class EdgeNeXt(nn.Module):
    """Stem (4×4 stride-4 convolution + layer norm), the four stages, the embedding head."""

    def __init__(self, variant: EdgeFaceVariant, embedding_size: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, variant.dims[0], 4, stride=4), LayerNorm2d(variant.dims[0], eps=EPS))
        self.stages = nn.Sequential(*(Stage(i, variant.dims[max(0, i - 1)], variant) for i in range(4)))
        self.head = EmbeddingHead(variant.dims[-1], embedding_size, variant.rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class EdgeFace(nn.Module):
    """The EdgeFace ``variant`` (a key of :data:`VARIANTS`) for ``resolution``×``resolution`` crops
    (112 published; any multiple of 16 from 32 works, the network pools globally); ``forward`` gives
    N×``embedding_size`` embeddings (not normalised)."""

    def __init__(self, variant: str = "xs_gamma_06", embedding_size: int = 512, resolution: int = 112):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EdgeFace variant {variant!r}; known: {sorted(VARIANTS)}")
        if resolution % 16 or resolution < 32:
            raise ValueError(f"EdgeFace takes crops whose side is a multiple of 16, at least 32; got {resolution}")
        self.config = {"variant": variant, "embedding_size": embedding_size, "resolution": resolution}
        self.model = EdgeNeXt(VARIANTS[variant], embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×S×S images in [-1, 1] -> N×embedding_size."""
        return self.model(x)


def _unwrap(state, path: Path) -> dict:
    """The network's tensors: a plain state dict, with a DistributedDataParallel ``module.`` prefix removed."""
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a state dict of tensors (a published EdgeFace checkpoint, edgeface_<variant>.pt)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def edgeface_config_of(state: dict, path: str | os.PathLike = "the state dict") -> dict:
    """The :class:`EdgeFace` arguments a state dict was saved from: the variant from the stem's
    channels and whether its layers are low-rank, the embedding size from the last layer."""
    path = Path(path)
    stem = state.get("model.stem.0.weight")
    low_rank = "model.head.fc.linear2.weight" in state
    last = state.get("model.head.fc.linear2.weight" if low_rank else "model.head.fc.weight")
    if stem is None or last is None:
        raise DataError(f"{path}: no model.stem.0.weight / model.head.fc tensor: not an EdgeFace checkpoint "
                        f"(keys start {sorted(state)[:5]})")
    found = [name for name, v in VARIANTS.items()
             if v.dims[0] == stem.shape[0] and (v.rank_ratio is not None) == low_rank]
    if not found:
        raise DataError(f"{path}: a {stem.shape[0]}-channel stem with {'low-rank' if low_rank else 'plain'} layers "
                        f"matches no EdgeFace variant ({', '.join(f'{n}: {v.dims[0]}' for n, v in VARIANTS.items())})")
    return {"variant": found[0], "embedding_size": int(last.shape[0]), "resolution": 112}


def load_edgeface(path: str | os.PathLike) -> EdgeFace:
    """An :class:`EdgeFace` with the weights of a published checkpoint (``edgeface_xs_gamma_06.pt``, …),
    read with ``torch.load(weights_only=True)`` (no code in the file runs), in eval mode. The variant
    and embedding size come from the tensors. A file whose tensors are not exactly that variant's, or
    hold NaN or infinite values, raises :class:`~idgen.errors.DataError` naming the file and the tensors."""
    path = Path(path).expanduser()
    fix = "pass a published EdgeFace checkpoint (edgeface_xs_gamma_06.pt, edgeface_s_gamma_05.pt, …)"
    state = _unwrap(read_torch_weights(path, fix), path)
    model = EdgeFace(**edgeface_config_of(state, path))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_weights(state, expected, path, f"an EdgeFace {model.config['variant']} checkpoint", fix)
    model.load_state_dict(state)
    return model.eval()
