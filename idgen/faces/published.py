"""Which face analysis each published generator was trained with, and the warning given when another
recogniser feeds it: embedding spaces of different recognisers do not line up, so an identity vector
means something only to a model trained on the recogniser that made it."""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple, Optional

from .analyzer import FaceAnalyzer
from .model_files import INSIGHTFACE_PACKS

#: Prefixes of the recogniser specs of :meth:`FaceAnalyzer.from_backend` that name a file after them.
_FILE_KINDS = ("ir_se50:", "iresnet:", "mobilefacenet:")


class FaceBackends(NamedTuple):
    """The face analysis a published model was trained with: its embeddings live in this recogniser's
    space, and no other recogniser's line up with them. ``detector`` and ``recognizer`` are named as
    :meth:`FaceAnalyzer.from_backend` takes them (a recogniser file name is looked up in the detector's
    insightface pack folder)."""

    detector: str
    recognizer: str

    @property
    def recognizer_file(self) -> str:
        """The file name of the recogniser (``arcface.onnx``, ``recognition_arcface_ir_se50.pth``, …;
        ``pack`` is the pack's own), or the spec itself when it names none (``dlib``)."""
        spec = self.recognizer
        if spec == "pack":
            pack = INSIGHTFACE_PACKS.get(os.path.basename(self.detector), INSIGHTFACE_PACKS["antelopev2"])
            return pack["recognition"]
        kind = next((k for k in _FILE_KINDS if spec.startswith(k)), "")
        return os.path.basename(spec[len(kind):])

    def analyzer(self, **kwargs) -> FaceAnalyzer:
        """The analyser (``kwargs`` go to :meth:`FaceAnalyzer.from_backend`: ``root``, ``det_size``, …)."""
        return FaceAnalyzer.from_backend(self.detector, self.recognizer, **kwargs)


#: The face analysis each published model was trained with, read in each reference's code: Arc2Face's
#: own ``arcface.onnx`` (WebFace42M) in place of antelopev2's recogniser; InstantID antelopev2's own
#: ``glintr100.onnx``; IP-Adapter FaceID buffalo_l's ``w600k_r50.onnx``; InfiniteYou facexlib's IR-SE50.
FACE_BACKENDS = {
    "arc2face": FaceBackends("antelopev2", "arcface.onnx"),
    "instantid": FaceBackends("antelopev2", "glintr100.onnx"),
    "faceid": FaceBackends("buffalo_l", "w600k_r50.onnx"),
    "infiniteyou": FaceBackends("antelopev2", "ir_se50:recognition_arcface_ir_se50.pth"),
}


def recognizer_file(analyzer: FaceAnalyzer) -> str:
    """The file name of ``analyzer``'s recogniser, or its class name when it has no file (dlib's)."""
    path = getattr(analyzer.recognizer, "path", None)
    return os.path.basename(os.fspath(path)) if path else type(analyzer.recognizer).__name__


def warn_if_foreign(analyzer: Optional[FaceAnalyzer], trained: Optional[FaceBackends], model: str,
                    given: str = "the face analyser given") -> None:
    """A ``UserWarning`` naming the recogniser ``model`` was trained on when ``analyzer`` (``given``: what
    the message calls it, e.g. a config field) embeds with another one (nothing for ``trained=None``: a
    model with random weights)."""
    if analyzer is None or analyzer.recognizer is None or trained is None:
        return
    used = recognizer_file(analyzer)
    if used != trained.recognizer_file:
        warnings.warn(f"{model} was trained on the embeddings of {trained.recognizer_file} (detector "
                      f"{trained.detector}, recognizer {trained.recognizer!r}); {given} embeds with {used}, whose "
                      f"embeddings do not line up with them: identities will be lost", UserWarning, stacklevel=3)
