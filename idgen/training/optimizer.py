"""The optimizer: AdamW, or bitsandbytes' 8-bit AdamW (optimizer state in 8 bits: a quarter of the memory).

bitsandbytes ≥ 0.50 runs its 8-bit AdamW on the CPU too (``pip install "idgen[adam8bit]"``); ``auto``
still picks it only on a GPU, where optimizer memory is the constraint. Parameters with fewer than
4,096 elements keep 32-bit state (bitsandbytes' ``min_8bit_size``).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .config import OptimConfig


def make_optimizer(groups: list[dict], config: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """``config.optimizer`` (``auto``, ``adamw`` or ``adamw8bit``) over the parameter ``groups``."""
    kind = config.optimizer
    if kind == "auto":
        try:
            import bitsandbytes  # noqa: F401

            kind = "adamw8bit" if device.type == "cuda" else "adamw"
        except ImportError:
            kind = "adamw"
    if kind == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError('optim.optimizer=adamw8bit needs bitsandbytes: pip install "idgen[adam8bit]"') from None
        return bnb.optim.AdamW8bit(groups, betas=tuple(config.betas), weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, betas=tuple(config.betas), weight_decay=config.weight_decay)
