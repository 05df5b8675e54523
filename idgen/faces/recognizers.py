"""Face recognisers: turn faces into identity embeddings, many at a time.

A recogniser has two steps so that work can be batched across images:
``crop(image, face)`` cuts out the face the way the model was trained (cheap, per face) and
``embed(crops)`` runs the network on an N×S×S×3 uint8 batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..errors import DataError, ModelFilesMissingError
from .align import align_face
from .model_files import ONNX_RECOGNIZER_FIX, dlib_model_file, read_onnx

# Per-channel (mean, std) on the 0..255 pixel scale, so every model uses (pixel - mean) / std.
NORMALIZATIONS = {
    # insightface ArcFace models (antelopev2 glintr100, buffalo_l w600k_r50, Arc2Face arcface.onnx)
    "arcface": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # torchvision ImageNet statistics on [0, 1] pixels: MobileFaceNet (foamliu)
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    # mxnet-exported insightface models that normalise inside the graph
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


class Recognizer(Protocol):
    embedding_size: int

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray: ...

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


def _graph_normalizes_itself(model) -> bool:
    """insightface's rule: mxnet-converted models start with Sub and Mul nodes."""
    nodes = model.graph.node[:8]
    names = [node.name for node in nodes]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return has_sub and has_mul


def batch_dynamic_model(model) -> bytes | None:
    """An ONNX model (read by :func:`read_onnx`; changed in place) exported with batch size fixed to 1,
    made to accept any batch and serialised.

    Many face models (MobileFaceNet among them) are exported with a static ``1×3×112×112`` input
    and a ``Reshape`` to ``[1, D]``. We rename the batch dimension symbolic and let those reshapes
    copy the batch dimension (shape value 0), so the recogniser can run on batches. Returns
    ``None`` when the model already takes any batch.
    """
    from onnx import numpy_helper

    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    if first.dim_param or first.dim_value != 1:
        return None
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].dim_param = "batch"
    constants = {out: node for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        name = node.input[1]
        if name in initializers:
            shape = numpy_helper.to_array(initializers[name]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                initializers[name].CopyFrom(numpy_helper.from_array(shape, name))
        elif name in constants:
            attribute = next(a for a in constants[name].attribute if a.name == "value")
            shape = numpy_helper.to_array(attribute.t).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                attribute.t.CopyFrom(numpy_helper.from_array(shape))
    return model.SerializeToString()


class OnnxRecognizer:
    """Any ArcFace-style ONNX recogniser that takes aligned N×3×S×S RGB crops.

    Args:
        path: the ``.onnx`` file.
        normalization: a key of :data:`NORMALIZATIONS`, ``"auto"`` (insightface's own rule), or a
            ``(mean, std)`` pair on the 0..255 scale.
        providers: onnxruntime execution providers (CPU by default).
    """

    def __init__(self, path: str | os.PathLike, normalization="auto", providers=None, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFilesMissingError(f"recogniser model not found: {self.path}; pass the path of an .onnx file")
        graph = read_onnx(self.path)
        if normalization == "auto":
            normalization = "none" if _graph_normalizes_itself(graph) else "arcface"
        mean, std = NORMALIZATIONS[normalization] if isinstance(normalization, str) else normalization
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        model = batch_dynamic_model(graph) or str(self.path)
        try:
            self.session = ort.InferenceSession(model, sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 — onnxruntime refuses the graph (an unknown operator, say)
            raise DataError(f"{self.path}: onnxruntime cannot run this model ({exc}); {ONNX_RECOGNIZER_FIX}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        size = model_input.shape[2]
        self.resolution = size if isinstance(size, int) else 112
        out_dim = self.session.get_outputs()[0].shape[-1]
        self.embedding_size = out_dim if isinstance(out_dim, int) else None

    @classmethod
    def mobilefacenet(cls, path: str | os.PathLike, **kwargs) -> "OnnxRecognizer":
        """MobileFaceNet (foamliu, 128-d) with its ImageNet normalisation."""
        return cls(path, normalization="imagenet", **kwargs)

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.resolution)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        blob = np.asarray(crops, dtype=np.float32).transpose(0, 3, 1, 2)
        blob = np.ascontiguousarray((blob - self.mean) / self.std)
        out = self.session.run(None, {self.input_name: blob})[0]
        self.embedding_size = out.shape[-1]
        return out.reshape(len(blob), -1).astype(np.float32)


class DlibRecognizer:
    """dlib's 128-d ResNet (``face-recognition-models``) on its own 150×150 face chips.

    dlib aligns with its 5-point shape model inside the detected box, so this works after any
    detector.
    """

    embedding_size = 128

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._shape5 = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))
        self._net = dlib.face_recognition_model_v1(str(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat")))
        self.resolution = 150

    def crop(self, image: np.ndarray, landmarks: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        shape = self._shape5(image, self._dlib.rectangle(x1, y1, x2, y2))
        return np.asarray(self._dlib.get_face_chip(image, shape, size=150, padding=0.25))

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        chips = [np.ascontiguousarray(c, dtype=np.uint8) for c in crops]
        return np.asarray(self._net.compute_face_descriptor(chips), dtype=np.float32).reshape(len(chips), 128)
