"""Face analysis: detect, align and embed faces with interchangeable backends.

>>> from idgen.faces import FaceAnalyzer
>>> analyzer = FaceAnalyzer.from_backend("dlib", "mobilefacenet:MobileFaceNet.onnx")
>>> face = analyzer.get_face("photo.jpg")            # largest face, with embedding
>>> face.bbox, face.landmarks, face.aligned.shape, face.normed_embedding
"""

from .align import ARCFACE_TEMPLATE, align_face, alignment_matrix, face_template, similarity_transform
from .analyzer import FaceAnalyzer, cosine_similarity, iter_image_files
from .detectors import Detection, DlibDetector, InsightFaceDetector
from .image import load_image
from .recognizers import DlibRecognizer, OnnxRecognizer
from .types import Face

__all__ = [
    "ARCFACE_TEMPLATE", "Detection", "DlibDetector", "DlibRecognizer", "Face", "FaceAnalyzer",
    "InsightFaceDetector", "OnnxRecognizer", "align_face", "alignment_matrix", "cosine_similarity", "face_template",
    "iter_image_files", "load_image", "similarity_transform",
]
