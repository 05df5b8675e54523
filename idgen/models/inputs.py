"""What every recogniser network here takes as input: aligned uint8 face crops as float in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(crops, channels_last: bool = True) -> torch.Tensor:
    """uint8 face crops (numpy or torch) as a recogniser's input, N×3×S×S float in [-1, 1].

    ``channels_last``: the crops are N×S×S×3, as :mod:`idgen.faces` aligns them; otherwise they are
    already N×3×S×S (``idgen.recognition.FaceSet.images``)."""
    crops = torch.as_tensor(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    return (crops.permute(0, 3, 1, 2) if channels_last else crops).float().div(127.5).sub(1.0)
