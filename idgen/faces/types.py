"""The result type every face backend returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Face:
    """One detected face, in the coordinates of the (upright) input image.

    Attributes:
        bbox: ``(x1, y1, x2, y2)`` in pixels.
        det_score: detector confidence; -1.0 for a box placed by ``FaceAnalyzer(fallback_box=...)``.
        landmarks: 5×2 array: left eye, right eye, nose tip, left and right mouth corner (image
            left/right), in pixels.
        aligned: the 112×112×3 uint8 RGB crop aligned to the ArcFace template.
        embedding: the recogniser's raw output (not normalised), or ``None`` before recognition.
        pose: head pose ``(yaw, pitch, roll)`` in degrees fitted to ``landmarks``
            (:func:`idgen.faces.pose.head_pose`: yaw > 0 turned to the subject's left, pitch > 0 chin
            up, roll > 0 counter-clockwise in the image); ``None`` for a face given, not detected.
    """

    bbox: np.ndarray
    det_score: float
    landmarks: np.ndarray
    aligned: Optional[np.ndarray] = None
    embedding: Optional[np.ndarray] = None
    pose: Optional[tuple[float, float, float]] = None
    source: str = field(default="", repr=False)

    @property
    def normed_embedding(self) -> Optional[np.ndarray]:
        """The embedding scaled to unit length (compare these with a dot product)."""
        if self.embedding is None:
            return None
        return self.embedding / max(float(np.linalg.norm(self.embedding)), 1e-12)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))

    @property
    def size(self) -> float:
        """Side of the square with the box's area, in pixels."""
        return self.area**0.5
