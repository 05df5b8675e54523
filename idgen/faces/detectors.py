"""Face detectors: find boxes and the five ArcFace landmarks in an RGB image.

A detector is any object with ``detect(image) -> list[Detection]`` where ``image`` is H×W×3
uint8 RGB. Detectors and recognisers are independent, so any detector can feed any recogniser.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Protocol

import numpy as np

from .model_files import dlib_model_file, insightface_files, read_onnx


class Detection(NamedTuple):
    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]: ...


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """ArcFace's five points from the iBUG 68-point layout: eye centres, nose tip, mouth corners."""
    return np.stack(
        [
            points[36:42].mean(0),  # image-left eye
            points[42:48].mean(0),  # image-right eye
            points[30],  # nose tip
            points[48],  # left mouth corner
            points[54],  # right mouth corner
        ]
    ).astype(np.float32)


class DlibDetector:
    """dlib's HOG face detector with its 68-point shape predictor (CPU, offline).

    Args:
        upsample: times to upsample the image before detection; 1 finds faces down to ~40 px at
            about 4× the cost.
    """

    def __init__(self, upsample: int = 0):
        import dlib

        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_model_file("shape_predictor_68_face_landmarks.dat")))

    def landmarks_in_box(self, image: np.ndarray, bbox) -> np.ndarray:
        """The five ArcFace points predicted inside a given box."""
        import dlib

        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        shape = self._predictor(image, dlib.rectangle(x1, y1, x2, y2))
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        return five_points_from_68(points)

    def detect(self, image: np.ndarray) -> list[Detection]:
        rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
        detections = []
        for rect, score in zip(rects, scores):
            bbox = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
            detections.append(Detection(bbox, float(score), self.landmarks_in_box(image, bbox)))
        return detections


class InsightFaceDetector:
    """insightface's SCRFD detector from a model pack (``antelopev2`` or ``buffalo_l``).

    Args:
        pack: pack name under ``<root>/models/`` or a folder path.
        root: insightface's model root (``~/.insightface`` by default, like insightface).
        det_size: detector input size; 640 for photos, 256 works better for tight face crops.
        det_thresh: minimum detection score.
    """

    def __init__(self, pack: str = "antelopev2", root: str | os.PathLike = "~/.insightface",
                 det_size: int = 640, det_thresh: float = 0.5, providers=None):
        from insightface.model_zoo import get_model

        detection_file, _ = insightface_files(pack, root)
        read_onnx(detection_file, f"download the {pack} pack again")
        kwargs = {"providers": providers or ["CPUExecutionProvider"]}
        self._model = get_model(str(detection_file), **kwargs)
        self._model.prepare(ctx_id=-1, input_size=(det_size, det_size), det_thresh=det_thresh)
        self.det_size = det_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        bboxes, kpss = self._model.detect(np.ascontiguousarray(image[..., ::-1]), max_num=0)
        return [
            Detection(box[:4].astype(np.float32), float(box[4]), kps.astype(np.float32))
            for box, kps in zip(bboxes, kpss)
        ]
