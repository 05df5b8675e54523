"""The embedded mini model: a small Arc2Face-style generator that ships inside idgen.

It was trained from scratch by ``training/train.py`` (``training/configs/mini_lfw64_vae.yaml``, then
``mini_lfw64.yaml``, continued once) on 64×64 aligned crops of LFW, conditioned on the flip-summed
128-d embedding of the MobileFaceNet that ships beside it. It draws small, blurry faces with nothing
downloaded, and carries identity coarsely (held-out dlib AUC 0.86, rank-1 13 % among 100 people; see the Results page
of the docs): the offline default of the demo, ``idgen generate``, ``idgen edit``
and ``generator.type: mini``. The published Arc2Face checkpoint stays the default wherever it is
available. ``weights/mini-arc2face/LICENSE.md`` says what the weights may be used for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

import idgen
from idgen.errors import ModelFilesMissingError
from idgen.faces import FaceAnalyzer
from idgen.faces.model_files import MOBILEFACENET_ONNX
from idgen.faces.published import FaceBackends

from .pipeline_arc2face import Arc2FacePipeline

#: The ``save_pretrained`` folder of the embedded model, inside the installed package.
MINI_MODEL_DIR = Path(idgen.__file__).resolve().parent / "weights" / "mini-arc2face"
#: Its output size in pixels, and the length of the identity vectors it conditions on.
MINI_RESOLUTION, MINI_IDENTITY_DIM = 64, 128
#: The face analysis it was conditioned with: dlib's detector and the shipped MobileFaceNet, the
#: embedding of the mirrored crop added (``data.recognizer_flip`` in its training config). Images
#: under 192 pixels (its own 64×64 renders) are detected on a 3× upscaled copy.
MINI_FACE_BACKENDS = {"detector": "dlib", "recognizer": "mobilefacenet", "flip": True, "min_side": 192}


def mini_face_analyzer(**kwargs) -> FaceAnalyzer:
    """The face analyser whose embeddings the mini model understands (``kwargs`` go to
    :meth:`FaceAnalyzer.from_backend`, e.g. ``upsample=1`` for small faces)."""
    options = {**MINI_FACE_BACKENDS, **kwargs}
    return FaceAnalyzer.from_backend(options.pop("detector"), options.pop("recognizer"), **options)


def load_mini_pipeline(device: Optional[str | torch.device] = None,
                       dtype: Optional[torch.dtype] = None) -> Arc2FacePipeline:
    """The embedded model as an :class:`Arc2FacePipeline`, its face analyser set, so that
    ``pipe(face_images=[photo])`` works offline.

    ``device``: default CUDA when available, else CPU. ``dtype``: default float16 on CUDA and
    float32 elsewhere (the weights are stored in float16; CPUs run float32 faster).
    """
    if not (MINI_MODEL_DIR / "model_index.json").is_file():
        raise ModelFilesMissingError(f"the embedded mini model is missing from {MINI_MODEL_DIR}; "
                                     "reinstall idgen (the wheel ships it as package data)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    pipe = Arc2FacePipeline.from_pretrained(os.fspath(MINI_MODEL_DIR), dtype=dtype).to(device)
    pipe.face_backends = FaceBackends(MINI_FACE_BACKENDS["detector"], f"mobilefacenet:{MOBILEFACENET_ONNX}")
    pipe.set_face_analyzer(mini_face_analyzer())
    return pipe
