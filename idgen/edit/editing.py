"""Edit a photo while controlling who is in it: put another person in (``replace_identity``) or
re-render the same person (``restyle``).

Both run an identity pipeline from :mod:`idgen.pipelines` and then *measure* the result with the
face analyser's recogniser — the similarity of the edited face to the identity asked for (and,
for a replacement, to the person who was there) — so a caller sees whether the edit worked
instead of trusting it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from idgen.errors import IdgenError, MultipleFacesError, NoFaceError
from idgen.faces import Face, FaceAnalyzer, cosine_similarity, load_image
from idgen.faces.image import describe

from .mask import DEFAULT_FEATHER, DEFAULT_GROW, face_mask
from .region import DEFAULT_CONTEXT, blend, crop_box, resize

FaceChoice = Union[int, Sequence[int], str, None]
#: Prompt of InstantID and InfiniteYou edits when the caller gives none.
DEFAULT_PROMPT = "a photo of a person"


@dataclass
class EditResult:
    """An edited photo and how well the edit kept or changed the identity.

    Attributes:
        image: the edited photo, at the input's full resolution.
        faces: indices of the edited faces among those detected in the input (largest first).
        similarity_to_target: per edited face, cosine similarity between the face in ``image`` and
            the identity asked for (for ``restyle``: the person in the input).
        similarity_to_original: per edited face, cosine similarity to the person who was there
            (``replace_identity`` only; ``None`` for ``restyle``).
        found_in_result: per edited face, whether the detector found a face at that place in
            ``image``; when not, the similarity is measured on the crop at the original landmarks.
        mask: ``H×W`` float32 weight of the generated pixels (0 = input pixel kept exactly), or
            ``None`` when the whole image was re-rendered.
    """

    image: Image.Image
    faces: list[int]
    similarity_to_target: list[float]
    similarity_to_original: Optional[list[float]]
    found_in_result: list[bool]
    mask: Optional[np.ndarray]


# ---------------------------------------------------------------------- shared steps
def _analyzer_for(pipe, analyzer: Optional[FaceAnalyzer]) -> FaceAnalyzer:
    analyzer = analyzer or getattr(pipe, "face_analyzer", None)
    if analyzer is None:
        raise IdgenError("editing needs a face analyser: pass analyzer=FaceAnalyzer.from_backend(...) "
                         "or call pipe.set_face_analyzer(...) first")
    return analyzer


def choose_faces(faces: list[Face], face: FaceChoice, name: str) -> list[int]:
    """Indices of the faces to edit. ``face`` is an index (largest face = 0), a list of indices,
    ``"all"``, or ``None`` — which is only accepted when the photo holds exactly one face."""
    if not faces:
        raise NoFaceError(f"no face found in {name}; use a photo where the face is at least 80 px wide, "
                          "or a detector that finds smaller faces (dlib upsample=1, insightface det_size)")
    if face is None:
        if len(faces) > 1:
            boxes = "; ".join(f"{i}: box {np.round(f.bbox).astype(int).tolist()}" for i, f in enumerate(faces))
            raise MultipleFacesError(f"{len(faces)} faces found in {name} ({boxes}); choose with face=INDEX "
                                     "(largest first), a list of indices, or 'all'")
        return [0]
    if face == "all":
        return list(range(len(faces)))
    chosen = [face] if isinstance(face, (int, np.integer)) else list(face)
    for index in chosen:
        if not 0 <= index < len(faces):
            raise ValueError(f"face {index} does not exist: {name} has {len(faces)} face(s), numbered from 0")
    return [int(i) for i in chosen]


def _identity_vector(identity, analyzer: FaceAnalyzer) -> np.ndarray:
    """An embedding (1-D array/tensor, in the analyser's recogniser space) or a photo of the person."""
    if isinstance(identity, torch.Tensor):
        identity = identity.detach().cpu().numpy()
    if isinstance(identity, np.ndarray) and identity.ndim == 1:
        return identity.astype(np.float32)
    return analyzer.get_face(identity).embedding.astype(np.float32)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def embedding_at(analyzer: FaceAnalyzer, rgb: np.ndarray, faces_in_result: list[Face],
                  where: Face) -> tuple[np.ndarray, bool]:
    """Embedding of the face at ``where``'s place in ``rgb``: the re-detected face overlapping it
    most (IoU ≥ 0.3), or, when there is none, the recogniser's crop at ``where``'s landmarks; and
    whether a re-detected face was used. How an edit's result is scored (public for benchmarks that
    score edits with another recogniser)."""
    best = max(faces_in_result, key=lambda f: _overlap(f.bbox, where.bbox), default=None)
    if best is not None and _overlap(best.bbox, where.bbox) >= 0.3:
        return best.embedding, True
    crop = analyzer.recognizer.crop(rgb, where.landmarks, where.bbox)
    return analyzer.recognizer.embed(crop[None])[0], False


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"identity vector has {b.shape[-1]} dimensions but the analyser's recogniser gives "
                         f"{a.shape[-1]}; pass the target as a photo or as a vector from the same recogniser")
    return float(cosine_similarity(a[None], b[None]).ravel()[0])


def _default_size(pipe) -> int:
    """The pipeline's native side in pixels (FLUX pipelines have no UNet: their default sample size)."""
    if _family(pipe) == "infiniteyou":
        return pipe.default_sample_size * pipe.vae_scale_factor
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def _size_step(pipe) -> int:
    """What the generated sides must be multiples of: FLUX packs its latents in 2×2 patches."""
    return 2 * pipe.vae_scale_factor if _family(pipe) == "infiniteyou" else 8


def _pipeline_as(pipe, cls):
    """``pipe`` itself when it is a ``cls``, else a ``cls`` sharing its components (``from_pipe``)."""
    if isinstance(pipe, cls):
        return pipe
    converted = cls.from_pipe(pipe)
    converted.set_face_analyzer(getattr(pipe, "face_analyzer", None))
    converted.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return converted


def _family(pipe) -> str:
    """``"arc2face"`` (SD 1.5, identity only), ``"instantid"`` (SDXL) or ``"infiniteyou"`` (FLUX); the
    last two take a text prompt and a pose."""
    from idgen.pipelines import Arc2FaceMixin, InfiniteYouMixin, InstantIDMixin

    for name, mixin in (("arc2face", Arc2FaceMixin), ("instantid", InstantIDMixin), ("infiniteyou", InfiniteYouMixin)):
        if isinstance(pipe, mixin):
            return name
    raise TypeError(f"editing needs an identity pipeline from idgen.pipelines (Arc2Face*, InstantID* or "
                    f"InfiniteYou*); got {type(pipe).__name__}")


def _takes_text(pipe) -> bool:
    return _family(pipe) != "arc2face"


def _check_prompt(pipe, prompt: Optional[str]) -> None:
    if not _takes_text(pipe) and prompt is not None:
        raise ValueError("Arc2Face pipelines take no text prompt (their prompt is the identity); pass prompt=None, "
                         "or use an InstantID or InfiniteYou pipeline for text")


def _edit_variant(pipe, task: str):
    """The img2img or inpaint pipeline of ``pipe``'s family, sharing its weights."""
    from idgen.pipelines import (Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline, InfiniteYouImg2ImgPipeline,
                                 InfiniteYouInpaintPipeline, InstantIDImg2ImgPipeline, InstantIDInpaintPipeline)

    variants = {"arc2face": (Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline),
                "instantid": (InstantIDImg2ImgPipeline, InstantIDInpaintPipeline),
                "infiniteyou": (InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline)}[_family(pipe)]
    return _pipeline_as(pipe, variants[("img2img", "inpaint").index(task)])


def _identity_arguments(pipe, target: np.ndarray, prompt: Optional[str], keypoints: np.ndarray) -> dict:
    """The identity arguments of one pipeline call: the embedding, and for InstantID / InfiniteYou
    the prompt and the pose (the face's landmarks in the pixels of the generated image)."""
    if _takes_text(pipe):
        return {"prompt": prompt or DEFAULT_PROMPT, "id_embeds": torch.from_numpy(target),
                "keypoints": np.asarray(keypoints, dtype=np.float64)}
    return {"id_embeds": torch.from_numpy(target)}


def _sampling(num_inference_steps, guidance_scale) -> dict:
    """Only the settings the caller chose, so each pipeline keeps its own defaults otherwise."""
    return {k: v for k, v in (("num_inference_steps", num_inference_steps), ("guidance_scale", guidance_scale))
            if v is not None}


# ---------------------------------------------------------------------- the edits
def replace_identity(photo, identity, *, pipe, analyzer: Optional[FaceAnalyzer] = None, face: FaceChoice = None,
                     prompt: Optional[str] = None, strength: float = 1.0, num_inference_steps: Optional[int] = None,
                     guidance_scale: Optional[float] = None, generator: Optional[torch.Generator] = None,
                     size: Optional[int] = None, grow: float = DEFAULT_GROW, feather: float = DEFAULT_FEATHER,
                     context: float = DEFAULT_CONTEXT) -> EditResult:
    """Put the person ``identity`` in place of the chosen face(s) of ``photo``.

    For each chosen face: a square crop around it (``context`` × the face box) is resized to the
    pipeline's resolution (``size``, default the model's native size) and inpainted with the target
    identity under the support of a feathered elliptical mask (:func:`~idgen.edit.mask.face_mask`);
    the result is resized back and blended into the full-resolution photo through the soft mask, so
    pixels outside the mask are the input's, exactly.

    Args:
        photo: path, PIL image or RGB array.
        identity: a photo of the target person, or their embedding from ``analyzer``'s recogniser
            (which must be the recogniser the pipeline was trained with, e.g. ArcFace for Arc2Face).
        pipe: an Arc2Face, InstantID or InfiniteYou pipeline of :mod:`idgen.pipelines` (any variant: it
            is turned into the inpaint one with ``from_pipe``, sharing weights). InstantID and
            InfiniteYou inpaint at the original face's pose: their keypoints are the replaced face's landmarks.
        analyzer: detects the faces and measures the similarities; default ``pipe.face_analyzer``.
        face: which face(s) to replace when the photo has several: index (largest first), list, or ``"all"``.
        prompt: InstantID and InfiniteYou only (default ``"a photo of a person"``); Arc2Face takes no text.
        strength: as in diffusers inpainting; 0 runs no diffusion and returns the photo unchanged.
        num_inference_steps, guidance_scale, generator: passed to the pipeline (its defaults when ``None``).
        grow, feather, context: mask size, soft-edge width and crop size (see :mod:`idgen.edit.mask`).
    """
    _check_prompt(pipe, prompt)
    analyzer = _analyzer_for(pipe, analyzer)
    rgb = load_image(photo)
    name = describe(photo)
    faces = analyzer.analyze(rgb)
    chosen = choose_faces(faces, face, name)
    target = _identity_vector(identity, analyzer)
    side_px = size or _default_size(pipe)
    if strength > 0:
        pipe = _edit_variant(pipe, "inpaint")

    edited = rgb.copy()
    total_mask = np.zeros(rgb.shape[:2], dtype=np.float32)
    for index in chosen:
        x0, y0, side = crop_box(faces[index], rgb.shape, context)
        mask = np.zeros_like(total_mask)
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        mask[window] = face_mask(rgb.shape, faces[index], grow, feather)[window]  # nothing outside the crop
        crop = edited[window]
        generated = crop
        if strength > 0:
            support = Image.fromarray(((mask[window] > 0) * 255).astype(np.uint8)).resize((side_px, side_px),
                                                                                          Image.NEAREST)
            pose = (faces[index].landmarks - [x0, y0]) * (side_px / side)
            output = pipe(image=Image.fromarray(crop).resize((side_px, side_px), Image.BICUBIC), mask_image=support,
                          strength=strength, height=side_px, width=side_px, generator=generator, output_type="np",
                          **_identity_arguments(pipe, target, prompt, pose),
                          **_sampling(num_inference_steps, guidance_scale))
            generated = resize((output.images[0] * 255).round().astype(np.uint8), (side, side))
        edited[window] = blend(crop, generated, mask[window])
        total_mask = np.maximum(total_mask, mask)

    result_faces = analyzer.analyze(edited)
    measured = [embedding_at(analyzer, edited, result_faces, faces[i]) for i in chosen]
    return EditResult(
        image=Image.fromarray(edited), faces=chosen,
        similarity_to_target=[_similarity(emb, target) for emb, _ in measured],
        similarity_to_original=[_similarity(emb, faces[i].embedding.astype(np.float32))
                                for (emb, _), i in zip(measured, chosen)],
        found_in_result=[found for _, found in measured], mask=total_mask,
    )


def restyle(photo, prompt: Optional[str] = None, *, pipe, analyzer: Optional[FaceAnalyzer] = None,
            face: FaceChoice = None, strength: float = 0.5, num_inference_steps: Optional[int] = None,
            guidance_scale: Optional[float] = None, generator: Optional[torch.Generator] = None,
            size: Optional[int] = None, keep_appearance: bool = False,
            reference_scale: Optional[float] = None) -> EditResult:
    """Re-render ``photo`` while keeping the identity of its (chosen) person.

    The identity is the embedding of the chosen face of the photo itself; the whole image goes
    through img2img at the pipeline's resolution (longer side ``size``) and is resized back to the
    photo's size. With an InstantID or InfiniteYou pipeline ``prompt`` changes style, setting or attributes and the
    pose is the face's own; Arc2Face pipelines have no text input, so ``prompt`` must be ``None``
    for them: they re-render the photo as the same person (``strength`` sets how much changes).
    ``keep_appearance`` (Arc2Face with its Reference Adapter loaded) also keeps the photo's appearance
    and background through reference attention to the photo, at ``reference_scale`` (default the pipeline's).
    """
    _check_prompt(pipe, prompt)
    if keep_appearance and _family(pipe) != "arc2face":
        raise ValueError("keep_appearance is Arc2Face's Reference Adapter; use an Arc2Face pipeline")
    analyzer = _analyzer_for(pipe, analyzer)
    rgb = load_image(photo)
    faces = analyzer.analyze(rgb)
    chosen = choose_faces(faces, face, describe(photo))
    if len(chosen) != 1:
        raise ValueError("restyle keeps one person's identity; choose a single face")
    person = faces[chosen[0]]
    target = person.embedding.astype(np.float32)

    edited = rgb
    if strength > 0:
        longest, step = size or _default_size(pipe), _size_step(pipe)
        pipe = _edit_variant(pipe, "img2img")
        height, width = rgb.shape[:2]
        scale = longest / max(height, width)
        work = (max(step, round(width * scale / step) * step), max(step, round(height * scale / step) * step))
        pose = person.landmarks * [work[0] / width, work[1] / height]
        # SD 1.5 img2img takes its size from the image; InstantID and InfiniteYou draw their keypoint
        # image at height × width (and FLUX resizes the photo to it).
        sized = {"height": work[1], "width": work[0]} if _takes_text(pipe) else {}
        image = Image.fromarray(resize(rgb, work))
        if keep_appearance:
            sized["reference_image"] = image
            if reference_scale is not None:
                sized["reference_scale"] = reference_scale
        output = pipe(image=image, strength=strength, generator=generator,
                      output_type="np", **sized, **_identity_arguments(pipe, target, prompt, pose),
                      **_sampling(num_inference_steps, guidance_scale))
        edited = resize((output.images[0] * 255).round().astype(np.uint8), (width, height))

    embedding, found = embedding_at(analyzer, edited, analyzer.analyze(edited), person)
    return EditResult(image=Image.fromarray(edited), faces=chosen, similarity_to_target=[_similarity(embedding, target)],
                      similarity_to_original=None, found_in_result=[found], mask=None)
