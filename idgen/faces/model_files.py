"""Where model files live, the errors that say how to get them when they do not, and the one reader
of ONNX model files (:func:`read_onnx`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import DataError, ModelFilesMissingError

#: MobileFaceNet (Apache-2.0, 128-d), shipped inside the package: the recogniser the embedded mini
#: model is conditioned on, so photo inputs work offline with the dlib detector.
MOBILEFACENET_ONNX = Path(__file__).resolve().parent.parent / "weights" / "mobilefacenet" / "MobileFaceNet.onnx"

#: insightface model packs: file name of each task's model inside ``<root>/models/<pack>/``.
INSIGHTFACE_PACKS = {
    "antelopev2": {"detection": "scrfd_10g_bnkps.onnx", "recognition": "glintr100.onnx"},
    "buffalo_l": {"detection": "det_10g.onnx", "recognition": "w600k_r50.onnx"},
}

_INSIGHTFACE_HELP = (
    "Download the '{pack}' pack (insightface's GitHub releases, or a Hugging Face mirror such as "
    "'DIAMONIK7777/antelopev2') and unzip it so the .onnx files sit directly in that folder. For "
    "Arc2Face, also put 'arcface.onnx' from the 'FoivosPar/Arc2Face' repo there and pass "
    "recognizer='arcface.onnx'."
)


def insightface_pack_dir(pack: str, root: str | os.PathLike = "~/.insightface") -> Path:
    """The folder of an insightface model pack, as ``insightface.app.FaceAnalysis`` lays it out.

    ``pack`` may also be a folder path, which is used as it is.
    """
    direct = Path(pack).expanduser()
    if direct.is_dir():
        return direct
    return Path(root).expanduser() / "models" / pack


def require_files(folder: Path, names: list[str], what: str, help_text: str) -> list[Path]:
    """Return ``folder/name`` for each name, or raise one error that lists every missing file."""
    paths = [folder / name for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing)
        raise ModelFilesMissingError(f"{what} model files missing: {listed}. {help_text}")
    return paths


def insightface_files(pack: str, root, recognizer: str | None = None) -> tuple[Path, Path]:
    """Paths of a pack's detector and recogniser ONNX files, checked to exist."""
    folder = insightface_pack_dir(pack, root)
    known = INSIGHTFACE_PACKS.get(Path(pack).name, INSIGHTFACE_PACKS["antelopev2"])
    names = [known["detection"], recognizer or known["recognition"]]
    help_text = _INSIGHTFACE_HELP.format(pack=Path(pack).name)
    detection, recognition = require_files(folder, names, f"insightface '{pack}'", help_text)
    return detection, recognition


def dlib_model_file(name: str) -> Path:
    """Locate a model file shipped by the ``face-recognition-models`` package.

    The package's own ``__init__`` imports ``pkg_resources``, which new setuptools no longer
    ships, so we find its folder without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissingError(
            f"dlib model file {name} not found: the 'face-recognition-models' package is not "
            "installed. Run: pip install 'idgen[dlib]'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ModelFilesMissingError(
            f"dlib model file missing: {path}. Reinstall it: pip install --force-reinstall face-recognition-models"
        )
    return path


#: What to do about an ONNX recogniser that cannot be used.
ONNX_RECOGNIZER_FIX = "pass a face recogniser exported as ONNX (an .onnx file), or download it again"


def read_onnx(path: Path, fix: str = ONNX_RECOGNIZER_FIX):
    """The ONNX model in ``path``, its weights checked: a file that is not ONNX (cut short, or another
    format), or whose weights hold NaN or infinite values, raises :class:`DataError` naming it and
    ending with ``fix``."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 — protobuf's DecodeError and onnx's own: not a model
        raise DataError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc}); {fix}") from None
    if not model.graph.node or not model.graph.input:
        raise DataError(f"{path}: not an ONNX model (no graph in it); {fix}")
    broken = []
    for weight in model.graph.initializer:
        values = numpy_helper.to_array(weight)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            broken.append(weight.name)
    if broken:
        raise DataError(f"{path}: NaN or infinite values in {', '.join(broken[:5])}; {fix}")
    return model
