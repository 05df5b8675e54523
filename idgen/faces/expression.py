"""FLAME expression parameters (the Arc2Face Expression Adapter's input): reading them from files,
and from a photo as the adapter's reference does: mediapipe's face landmarker finds 478 landmarks, a square around them (1.4 × their box) is
cropped to 224 × 224, and SMIRK's expression encoder (:mod:`idgen.models.smirk`) gives 55 numbers.

Both files are downloaded by the user (they are not idgen's to ship): ``face_landmarker.task``
(mediapipe's model; the ``mediapipe`` package must be installed) and ``SMIRK_em1.pt`` (SMIRK's
checkpoint, MIT).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, DataError, NoFaceError
from ..io import check_weights, read_npy, read_torch_weights
from ..models.smirk import CHECKPOINT_PREFIX, EXPRESSIONS, EYELIDS, JAW, SmirkExpressionEncoder
from .image import describe, load_image

#: FLAME parameters per image: 50 expression, 2 eyelid, 3 jaw (SMIRK's order).
EXPRESSION_SIZE = EXPRESSIONS + EYELIDS + JAW
EXPRESSION_FIX = (f"give {EXPRESSION_SIZE} FLAME parameters per expression (50 expression, 2 eyelid, 3 jaw): a .npy "
                  f"array of shape ({EXPRESSION_SIZE},) or (K, {EXPRESSION_SIZE}), or a .json list of such lists")
LANDMARKER_FILE, CHECKPOINT_FILE = "face_landmarker.task", "SMIRK_em1.pt"
CROP_SIZE, CROP_SCALE = 224, 1.4

#: RGB photo (H × W × 3, uint8) → the face's landmarks in pixels (L × 2), or None without a face.
Landmarker = Callable[[np.ndarray], Optional[np.ndarray]]


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


def crop_box(landmarks: np.ndarray) -> tuple[float, float, float]:
    """``(left, top, side)`` of SMIRK's square crop: centred on the landmarks' box, its side 1.4 × the
    mean of the box's width and height (rounded down to whole pixels)."""
    (left, top), (right, bottom) = landmarks.min(0), landmarks.max(0)
    side = int((right - left + bottom - top) / 2 * CROP_SCALE)
    return (left + right) / 2 - side / 2, (top + bottom) / 2 - side / 2, side


def crop(rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
    """The encoder's input for the face at ``landmarks``: ``1 × 3 × 224 × 224`` RGB in [0, 1]."""
    left, top, side = crop_box(np.asarray(landmarks, dtype=np.float64)[:, :2])
    scale = side / (CROP_SIZE - 1)   # the square's corners go to pixels 0 and 223, as in SMIRK
    shift = 0.5 * (1 - scale)        # PIL maps pixel centres, SMIRK's transform pixel indices
    square = Image.fromarray(rgb).transform((CROP_SIZE, CROP_SIZE), Image.AFFINE,
                                            (scale, 0, left + shift, 0, scale, top + shift), resample=Image.BILINEAR)
    return torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def mediapipe_landmarker(task_file: str | os.PathLike) -> Landmarker:
    """mediapipe's face landmarker (one face, detection and presence confidence 0.1, as SMIRK uses it)."""
    try:
        from mediapipe import Image as MediapipeImage, ImageFormat
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        raise ConfigError("reading an expression from a photo needs the mediapipe package: pip install mediapipe") from None
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(task_file)), num_faces=1,
                                           min_face_detection_confidence=0.1, min_face_presence_confidence=0.1)
    detector = vision.FaceLandmarker.create_from_options(options)

    def landmarks(rgb: np.ndarray) -> Optional[np.ndarray]:
        found = detector.detect(MediapipeImage(image_format=ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        if not found.face_landmarks:
            return None
        return np.array([[point.x * rgb.shape[1], point.y * rgb.shape[0]] for point in found.face_landmarks[0]])

    return landmarks


def load_smirk_encoder(path: str | os.PathLike) -> SmirkExpressionEncoder:
    """SMIRK's expression encoder with the weights of ``SMIRK_em1.pt`` (its other networks' tensors are
    left out); a DataError naming the file when its tensors are not the encoder's."""
    fix = "download SMIRK_em1.pt again (see the Arc2Face guide)"
    state = read_torch_weights(path, fix)
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a SMIRK checkpoint (a dict of tensors); {fix}")
    state = {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    encoder = SmirkExpressionEncoder()
    check_weights(state, {k: v.shape for k, v in encoder.state_dict().items()}, path,
                  "SMIRK's expression encoder", fix)
    encoder.load_state_dict(state)
    return encoder.eval()


class ExpressionExtractor:
    """Photo → 55 FLAME expression parameters (see the module docstring)."""

    def __init__(self, encoder: SmirkExpressionEncoder, landmarker: Landmarker):
        self.encoder, self.landmarker = encoder, landmarker

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ExpressionExtractor":
        """From a folder holding ``face_landmarker.task`` and ``SMIRK_em1.pt``."""
        folder = Path(folder)
        return cls(load_smirk_encoder(folder / CHECKPOINT_FILE), mediapipe_landmarker(folder / LANDMARKER_FILE))

    @torch.no_grad()
    def __call__(self, photo) -> np.ndarray:
        """The 55 parameters (float32) of the face in ``photo`` (path, PIL image or RGB array); a
        NoFaceError naming the photo when the landmarker finds none."""
        rgb = load_image(photo)
        landmarks = self.landmarker(rgb)
        if landmarks is None:
            raise NoFaceError(f"{describe(photo)}: no face found to read the expression from; use a photo "
                              "with one clear face")
        return self.encoder(crop(rgb, landmarks))[0].numpy()
