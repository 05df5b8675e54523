"""The identity-consistency filter: keep a generated image only when it shows the intended person.

Each image is re-analysed with any :class:`idgen.faces.FaceAnalyzer`. An image is kept when a face
is found, optionally turned no further than ``max_abs_yaw`` degrees left or right (its
:attr:`~idgen.faces.Face.pose`), its embedding is close enough to the identity's *reference*
(cosine ≥ ``threshold``) and, optionally, it is not a near-duplicate of an image already kept for
that identity.

The reference is the target identity vector itself when the recogniser embeds into the same space
the generator is conditioned on (Arc2Face with its ``arcface.onnx``), or else the *centroid* of the
identity's first images: the mean of their embeddings, re-taken over those that agree with it, so
one off-identity image cannot drag it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


@dataclass(frozen=True)
class TurnedAway:
    """What :meth:`ConsistencyFilter.embed` gives, in place of an embedding, for an image whose face
    is turned further than the filter's ``max_abs_yaw``."""

    yaw: float


@dataclass
class Verdict:
    kept: bool
    reason: str                       # "kept", "no_face", "turned_away", "low_similarity" or "duplicate"
    similarity: Optional[float]       # cosine to the reference (None when no face)
    embedding: Optional[np.ndarray]   # unit-length recogniser embedding (None when no face)


class ConsistencyFilter:
    def __init__(self, analyzer, threshold: float = 0.5, reference: str = "auto",
                 duplicate_cosine: Optional[float] = None, max_abs_yaw: Optional[float] = None):
        if reference not in ("auto", "target", "centroid"):
            raise ValueError(f"unknown filter reference {reference!r}; use 'auto', 'target' or 'centroid'")
        self.analyzer = analyzer
        self.threshold = threshold
        self.reference = reference
        self.duplicate_cosine = duplicate_cosine
        self.max_abs_yaw = max_abs_yaw

    def embed(self, images: Sequence) -> list[np.ndarray | TurnedAway | None]:
        """Unit embedding of the largest face of each image (``None`` where no face is found, a
        :class:`TurnedAway` where its yaw exceeds ``max_abs_yaw``), with the recogniser run once on
        the whole list."""
        faces = self.analyzer.analyze_many([np.asarray(image) for image in images], batch_size=len(images) or 1,
                                           progress=False)
        return [self._embedding(face) for face in faces]

    def _embedding(self, face) -> np.ndarray | TurnedAway | None:
        if face is None:
            return None
        if self.max_abs_yaw is not None and abs(face.pose[0]) > self.max_abs_yaw:
            return TurnedAway(face.pose[0])
        return face.normed_embedding.astype(np.float64)

    def reference_for(self, target: np.ndarray, embeddings: Sequence[np.ndarray | TurnedAway | None]) -> Optional[np.ndarray]:
        """The vector images of this identity are compared with; ``None`` until a face is seen."""
        found = [e for e in embeddings if isinstance(e, np.ndarray)]
        use_target = self.reference == "target" or (
            self.reference == "auto" and (not found or found[0].shape == np.shape(target)))
        if use_target:
            return _unit(np.asarray(target, dtype=np.float64))
        if not found:
            return None
        stacked = np.stack(found)
        centroid = _unit(stacked.mean(0))
        agreeing = stacked[stacked @ centroid >= self.threshold]
        return _unit(agreeing.mean(0)) if len(agreeing) else centroid

    def judge(self, embeddings: Sequence[np.ndarray | TurnedAway | None], reference: Optional[np.ndarray],
              kept: Sequence[np.ndarray] = ()) -> list[Verdict]:
        """Verdicts in order; an image kept here counts as kept for the duplicate test of the next."""
        kept = list(kept)
        verdicts = []
        for embedding in embeddings:
            if isinstance(embedding, TurnedAway):
                verdicts.append(Verdict(False, "turned_away", None, None))
                continue
            if embedding is None or reference is None:
                verdicts.append(Verdict(False, "no_face", None, embedding))
                continue
            similarity = float(embedding @ reference)
            if similarity < self.threshold:
                verdicts.append(Verdict(False, "low_similarity", similarity, embedding))
            elif self.duplicate_cosine is not None and any(float(embedding @ k) >= self.duplicate_cosine for k in kept):
                verdicts.append(Verdict(False, "duplicate", similarity, embedding))
            else:
                kept.append(embedding)
                verdicts.append(Verdict(True, "kept", similarity, embedding))
        return verdicts


class KeepAll:
    """The filter when filtering is off: every image is kept, nothing is analysed."""

    def embed(self, images):
        return [None] * len(images)

    def reference_for(self, target, embeddings):
        return None

    def judge(self, embeddings, reference, kept=()):
        return [Verdict(True, "kept", None, None) for _ in embeddings]
