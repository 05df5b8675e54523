"""FaceAnalyzer: detector + aligner + recogniser behind one API, for one image or thousands."""

from __future__ import annotations

import os
from typing import Iterable, Literal, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import IdgenError, MultipleFacesError, NoFaceError
from .align import align_face, center_box, template_in_box
from .detectors import Detection, Detector, DlibDetector, InsightFaceDetector
from .image import ImageInput, describe, load_image
from .model_files import MOBILEFACENET_ONNX, insightface_files, insightface_pack_dir
from .pose import head_pose
from .trained import EdgeFaceFileRecognizer, IResNetFileRecognizer, IRSEFileRecognizer, TrainedRecognizer
from .recognizers import DlibRecognizer, OnnxRecognizer, Recognizer
from .types import Face

Policy = Literal["largest", "single"]

#: ``det_score`` of a face placed by ``fallback_box`` rather than detected.
FALLBACK_SCORE = -1.0

#: Smallest image side (pixels) worth running a detector on.
MIN_IMAGE_SIDE = 32
#: The advice of the no-face and several-faces errors, which name options of the Python API and the
#: command line (the demo replaces them with what its page offers).
TIGHT_CROP_HINT = "for tightly cropped faces try a smaller det_size (e.g. 256) or dlib upsample=1"
SEVERAL_FACES_HINT = "crop the photo to one person or use policy='largest'"


class FaceAnalyzer:
    """Find, align and embed faces.

    Args:
        detector: any object with ``detect(rgb) -> list[Detection]``.
        recognizer: any object with ``crop`` and ``embed`` (see :mod:`idgen.faces.recognizers`);
            ``None`` for detection and alignment only.
        max_side: images larger than this are detected on a downscaled copy; boxes and
            landmarks are mapped back and crops are cut from the full-resolution image.
        min_side: images whose shorter side is below this are detected on an upscaled copy (dlib's
            detector misses faces under about 80 pixels, e.g. in 64×64 renders); 0: never.
        flip: add the embedding of the mirrored crop (flip test-time augmentation).
        fallback_box: when set (a fraction of the shorter side), images where no face is
            detected get a centred square box of that size instead of an error; meant for
            already-cropped benchmark sets such as LFW where every image holds a face.
    """

    def __init__(self, detector: Detector, recognizer: Optional[Recognizer] = None, *,
                 max_side: int = 1600, min_side: int = 0, flip: bool = False, fallback_box: Optional[float] = None):
        self.detector = detector
        self.recognizer = recognizer
        self.max_side, self.min_side = max_side, min_side
        self.flip = flip
        self.fallback_box = fallback_box

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backend(cls, detector: str = "dlib", recognizer: str | os.PathLike | None = "dlib", *,
                     root: str | os.PathLike = "~/.insightface", det_size: int = 640,
                     normalization="auto", upsample: int = 0, **kwargs) -> "FaceAnalyzer":
        """Build an analyzer from backend names.

        ``detector``: ``"dlib"``, or an insightface pack name / folder (``"antelopev2"``,
        ``"buffalo_l"``). ``recognizer``: ``"dlib"``, ``"mobilefacenet"`` (the copy shipped with
        idgen, see :data:`~idgen.faces.model_files.MOBILEFACENET_ONNX`), ``"mobilefacenet:<path>"``, the path of an
        ONNX recogniser, a file name inside the insightface pack (e.g. Arc2Face's
        ``"arcface.onnx"``), ``"pack"`` for the pack's own recogniser, a folder written by
        ``idgen recognizer train --architecture mobilefacenet`` (or ``iresnet``, ``edgeface``),
        ``"iresnet:<path>"`` for an insightface ``arcface_torch`` checkpoint (``backbone.pth``),
        ``"edgeface:<path>"`` for a published EdgeFace checkpoint (``edgeface_xs_gamma_06.pt``, …), ``"ir_se50:<path>"`` for facexlib's
        ``recognition_arcface_ir_se50.pth`` (a file, or a file name inside the insightface pack of
        ``detector``, as for ``"arcface.onnx"``), or ``None``.
        """
        if detector == "dlib":
            det = DlibDetector(upsample=upsample)
        else:
            det = InsightFaceDetector(detector, root=root, det_size=det_size)
        rec = None
        if recognizer is None:
            pass
        elif str(recognizer) == "dlib":
            rec = DlibRecognizer()
        elif os.path.isfile(os.path.join(str(recognizer), "model.safetensors")):  # an `idgen recognizer train` folder
            rec = TrainedRecognizer(recognizer)
        elif str(recognizer) == "mobilefacenet":
            rec = OnnxRecognizer.mobilefacenet(MOBILEFACENET_ONNX)
        elif str(recognizer).startswith("iresnet:"):
            rec = IResNetFileRecognizer(str(recognizer).split(":", 1)[1])
        elif str(recognizer).startswith("edgeface:"):
            rec = EdgeFaceFileRecognizer(str(recognizer).split(":", 1)[1])
        elif str(recognizer).startswith("ir_se50:"):
            rec = IRSEFileRecognizer(_pack_file(str(recognizer).split(":", 1)[1], detector, root))
        elif str(recognizer).startswith("mobilefacenet:"):
            rec = OnnxRecognizer.mobilefacenet(str(recognizer).split(":", 1)[1])
        elif os.path.isfile(str(recognizer)):
            rec = OnnxRecognizer(recognizer, normalization=normalization)
        elif detector != "dlib":
            name = None if str(recognizer) == "pack" else str(recognizer)
            _, path = insightface_files(detector, root, recognizer=name)
            rec = OnnxRecognizer(path, normalization=normalization)
        else:
            rec = OnnxRecognizer(recognizer, normalization=normalization)  # raises: file not found
        return cls(det, rec, **kwargs)

    # ------------------------------------------------------------------ detection
    def detect(self, image: ImageInput) -> list[Face]:
        """All faces in ``image`` with aligned crops and head poses (no embeddings), largest first."""
        rgb = load_image(image)
        return self._detect_rgb(rgb, describe(image))

    def _detect_rgb(self, rgb: np.ndarray, name: str) -> list[Face]:
        height, width = rgb.shape[:2]
        if min(height, width) < MIN_IMAGE_SIDE:
            return []
        scale = min(1.0, self.max_side / max(height, width))
        if self.min_side and min(height, width) < self.min_side:
            scale = self.min_side / min(height, width)
        resized = rgb
        if scale != 1.0:
            import cv2

            resized = cv2.resize(rgb, (round(width * scale), round(height * scale)),
                                 interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC)
        detections = [
            Detection(d.bbox / scale, d.score, d.landmarks / scale) for d in self.detector.detect(resized)
        ]
        if not detections and self.fallback_box:
            detections = [self._fallback_detection(rgb)]
        faces = [
            Face(bbox=d.bbox, det_score=d.score, landmarks=d.landmarks,
                 aligned=align_face(rgb, d.landmarks), pose=head_pose(d.landmarks, (height, width)), source=name)
            for d in detections
        ]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def _fallback_detection(self, rgb: np.ndarray) -> Detection:
        box = center_box(*rgb.shape[:2], self.fallback_box)
        if hasattr(self.detector, "landmarks_in_box"):
            landmarks = self.detector.landmarks_in_box(rgb, box)
        else:
            landmarks = template_in_box(box).astype(np.float32)
        return Detection(box, FALLBACK_SCORE, landmarks)

    # ------------------------------------------------------------------ recognition
    def _embed_faces(self, items: list[tuple[np.ndarray, Face]]) -> None:
        """Embed faces (each with its source image) in one recogniser batch, in place."""
        if not items:
            return
        if self.recognizer is None:
            raise IdgenError("this FaceAnalyzer has no recogniser; build it with recognizer=...")
        crops = np.stack([self.recognizer.crop(rgb, f.landmarks, f.bbox) for rgb, f in items])
        embeddings = self.recognizer.embed(crops)
        if self.flip:
            embeddings = embeddings + self.recognizer.embed(np.ascontiguousarray(crops[:, :, ::-1]))
        for (_, face), embedding in zip(items, embeddings):
            face.embedding = embedding

    def embed_aligned(self, images: list[np.ndarray]) -> np.ndarray:
        """Raw embeddings (N×D) of face crops that are already aligned, with no detection: the ArcFace
        template is placed on the whole image (as ``fallback_box=1.0`` would place it), so a 112×112
        aligned crop is used as it is; ``flip`` applies as for detected faces. For verification sets
        of aligned crops (insightface ``.bin`` files)."""
        faces = []
        for rgb in images:
            box = center_box(*rgb.shape[:2], 1.0)
            faces.append(Face(bbox=box, det_score=FALLBACK_SCORE, landmarks=template_in_box(box).astype(np.float32)))
        self._embed_faces(list(zip(images, faces)))
        return np.stack([face.embedding for face in faces])

    def analyze(self, image: ImageInput) -> list[Face]:
        """All faces in ``image``, largest first, each with its embedding."""
        rgb = load_image(image)
        faces = self._detect_rgb(rgb, describe(image))
        self._embed_faces([(rgb, f) for f in faces])
        return faces

    def _select(self, faces: list[Face], name: str, shape, policy: Policy) -> Face:
        if not faces:
            hint = (
                f"the image is only {shape[1]}×{shape[0]} px; use a photo where the face is at least 80 px wide"
                if min(shape[:2]) < 80
                else TIGHT_CROP_HINT
            )
            raise NoFaceError(f"no face found in {name}; {hint}")
        if policy == "single" and len(faces) > 1:
            raise MultipleFacesError(f"{len(faces)} faces found in {name}; {SEVERAL_FACES_HINT}")
        if policy not in ("largest", "single"):
            raise ValueError(f"unknown face policy {policy!r}; use 'largest' or 'single'")
        return faces[0]

    def get_face(self, image: ImageInput, policy: Policy = "largest", *, name: str | None = None) -> Face:
        """The one face of ``image``: the largest, or an error when ``policy='single'`` and
        several are found. Raises :class:`NoFaceError` naming the image when none is (``name``:
        what to call it, e.g. the file an already decoded array came from)."""
        rgb = load_image(image)
        name = name or describe(image)
        face = self._select(self._detect_rgb(rgb, name), name, rgb.shape, policy)
        self._embed_faces([(rgb, face)])
        return face

    def analyze_many(self, images: Sequence[ImageInput], *, policy: Policy = "largest",
                     batch_size: int = 64, on_missing: Literal["skip", "report", "raise"] = "skip",
                     progress: bool = True) -> list[Face | IdgenError | None]:
        """One face per image for many images; the recogniser runs on batches of crops.

        With ``on_missing='skip'`` an image with no face, or one that cannot be read, gives ``None``
        in its place; with ``'report'`` the error saying why (an :class:`ImageReadError`, a
        :class:`NoFaceError`, ...) takes its place, so no caller has to read the image again to find
        out; with ``'raise'`` the first such image raises.
        """
        results: list[Face | IdgenError | None] = [None] * len(images)
        pending: list[tuple[int, np.ndarray, Face]] = []

        def flush():
            self._embed_faces([(rgb, face) for _, rgb, face in pending])
            for index, _, face in pending:
                results[index] = face
            pending.clear()

        for index, image in enumerate(tqdm(images, desc="faces", disable=not progress, unit="img")):
            try:
                rgb = load_image(image)
                name = describe(image)
                face = self._select(self._detect_rgb(rgb, name), name, rgb.shape, policy)
            except IdgenError as exc:
                if on_missing == "raise":
                    raise
                if on_missing == "report":
                    results[index] = exc
                continue
            pending.append((index, rgb, face))
            if len(pending) >= batch_size:
                flush()
        flush()
        return results


def _pack_file(name: str, detector: str, root) -> str:
    """``name`` when it is a file (or no insightface pack is the detector), else that name inside the
    detector's insightface pack folder, where the model files of a published model's face analysis sit."""
    if os.path.isfile(os.path.expanduser(name)) or detector == "dlib":
        return os.path.expanduser(name)
    return str(insightface_pack_dir(detector, root) / name)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N×D or D) arrays of embeddings."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (a * b).sum(-1)


#: The file name extensions (lower case) that count as photos in a folder of photos.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})


def iter_image_files(folder: str | os.PathLike) -> Iterable[str]:
    """Image files below ``folder``, sorted, by extension (:data:`IMAGE_EXTENSIONS`)."""
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(root, name)
