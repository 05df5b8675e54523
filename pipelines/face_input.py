"""Shared by the identity pipelines: accept face photos wherever an identity embedding is accepted."""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

from idgen.errors import DataError, IdgenError
from idgen.faces import Face, FaceAnalyzer


class FaceInputMixin:
    """Gives a pipeline a face analyser (not a diffusers component: it is not saved with the
    pipeline) and a helper turning photos into :class:`~idgen.faces.Face` records."""

    face_analyzer: Optional[FaceAnalyzer] = None

    def set_face_analyzer(self, analyzer: Optional[FaceAnalyzer]) -> None:
        """Use ``analyzer`` for photos passed to ``__call__`` (e.g.
        ``FaceAnalyzer.from_backend("antelopev2", "arcface.onnx")`` for Arc2Face)."""
        self.face_analyzer = analyzer

    def analyze_faces(self, images: Sequence, policy: str = "largest") -> list[Face]:
        """One face per photo (the largest, or an error with ``policy='single'`` when several)."""
        if self.face_analyzer is None:
            raise IdgenError(
                "this pipeline has no face analyser; call pipe.set_face_analyzer("
                "FaceAnalyzer.from_backend(...)) or pass identity embeddings instead of photos"
            )
        return [self.face_analyzer.get_face(image, policy=policy) for image in images]


def photo_list(face_images) -> list:
    """``face_images`` (one photo, or a list or tuple of photos) as a list; an empty list or tuple
    raises :class:`~idgen.errors.DataError` (not numpy's "need at least one array to stack")."""
    photos = list(face_images) if isinstance(face_images, (list, tuple)) else [face_images]
    if not photos:
        raise DataError("face_images is empty: pass at least one face photo (a path, PIL image or array), "
                        "or id_embeds instead")
    return photos


def renamed_argument(kwargs: dict, old: str, new: str, value):
    """``value``, or ``kwargs[old]`` (removed from ``kwargs``) with a ``FutureWarning`` that ``old``
    is now ``new``; both given is a ``ValueError``."""
    if old not in kwargs:
        return value
    if value is not None:
        raise ValueError(f"pass {new} only ({old} is its old name)")
    warnings.warn(f"`{old}` is deprecated; pass `{new}` (the same argument, named as in every idgen pipeline)",
                  FutureWarning, stacklevel=3)
    return kwargs.pop(old)
