"""Shared by the identity pipelines: accept face photos wherever an identity embedding is accepted, read
identity embeddings the same way everywhere, and show the parent pipeline's arguments in ``__call__``'s
signature."""

from __future__ import annotations

import functools
import inspect
from typing import Optional, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline

from idgen.errors import DataError, IdgenError
from idgen.faces import Face, FaceAnalyzer
from idgen.faces.published import FaceBackends, warn_if_foreign


class FaceInputMixin:
    """Gives a pipeline a face analyser (not a diffusers component: it is not saved with the
    pipeline) and a helper turning photos into :class:`~idgen.faces.Face` records.

    :attr:`face_backends` is the face analysis the model was trained with (a class attribute, which a
    pipeline whose weights come from elsewhere, such as the embedded mini model or a random tiny one,
    replaces on the instance); :meth:`set_face_analyzer` warns when given another recogniser.

    A diffusers pipeline class with an identity mixin in front gets a ``__call__`` whose signature
    (``inspect.signature``, ``help()``, IDEs) lists the mixin's own arguments followed by every
    argument of the diffusers ``__call__`` behind it that the mixin passes on unchanged (keyword
    only); :attr:`parent_arguments_taken` names those the mixin fills in itself.
    """

    face_analyzer: Optional[FaceAnalyzer] = None
    #: The face analysis the published model was trained with (``None``: random weights, any will do).
    face_backends: Optional[FaceBackends] = None
    #: Arguments of the diffusers ``__call__`` behind the mixin that the mixin sets itself.
    parent_arguments_taken: frozenset = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        parent = next((base for base in cls.__mro__
                       if issubclass(base, DiffusionPipeline) and not issubclass(base, FaceInputMixin)), None)
        if parent is not None:
            cls.__call__ = _with_parent_arguments(cls.__call__, parent.__call__, cls.parent_arguments_taken)

    def set_face_analyzer(self, analyzer: Optional[FaceAnalyzer]) -> None:
        """Use ``analyzer`` for photos passed to ``__call__``: normally ``pipe.face_backends.analyzer()``,
        the one the model was trained with; another recogniser gets a ``UserWarning`` naming that one."""
        warn_if_foreign(analyzer, self.face_backends, type(self).__name__)
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


def _with_parent_arguments(call, parent_call, taken: frozenset):
    """``call`` (the mixin's ``__call__``, which passes ``**kwargs`` on to ``parent_call``) behind a
    wrapper whose signature lists ``call``'s own parameters and then, keyword-only, those of
    ``parent_call`` it does not name itself and does not set (``taken``). Each pipeline class gets its
    own wrapper, since each has its own parent."""
    call = getattr(call, "mixin_call", call)  # a subclass of a pipeline class wraps the mixin's call again

    @functools.wraps(call)
    def __call__(self, *args, **kwargs):
        return call(self, *args, **kwargs)

    own = inspect.signature(call)
    parameters = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    named = {p.name for p in parameters} | set(taken)
    parameters += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                   for p in inspect.signature(parent_call).parameters.values()
                   if p.name not in named and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    __call__.__signature__ = own.replace(parameters=parameters)
    __call__.mixin_call = call
    return __call__


def identity_rows(id_embeds) -> torch.Tensor:
    """``id_embeds`` — one vector, an ``N × D`` tensor or array, or a list of vectors (tensors, arrays
    or lists of numbers) — as an ``N × D`` float32 tensor on the CPU, values unchanged."""
    if isinstance(id_embeds, (list, tuple)) and id_embeds and not np.isscalar(id_embeds[0]):
        rows = torch.stack([identity_rows(row) for row in id_embeds])
    else:
        rows = torch.as_tensor(np.asarray(id_embeds.detach().float().cpu() if torch.is_tensor(id_embeds) else id_embeds,
                                          dtype=np.float32))   # float() first: numpy has no bfloat16
    if rows.ndim == 0 or rows.numel() == 0:
        raise ValueError(f"id_embeds must hold identity vectors (N × D), not a tensor of shape {tuple(rows.shape)}")
    return rows.reshape(-1, rows.shape[-1])


def prompt_batch_size(prompt, prompt_embeds) -> int:
    """How many prompts a call has: the texts in ``prompt`` (one string or a list), else the rows of
    ``prompt_embeds``; a ``ValueError`` saying what to pass when there is neither."""
    if prompt is not None:
        return 1 if isinstance(prompt, str) else len(prompt)
    if prompt_embeds is None:
        raise ValueError("no prompt: pass prompt (a text or a list of texts) or prompt_embeds "
                         "(with pooled_prompt_embeds), as for the diffusers pipeline")
    return prompt_embeds.shape[0]
