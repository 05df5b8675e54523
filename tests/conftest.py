"""Shared fixtures: vendored photos, and the real data in ../shared when it is there."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"
SHARED = Path(os.environ.get("IDGEN_SHARED", ROOT.parent / "shared"))
LFW = SHARED / "data" / "lfw"
ORL = SHARED / "data" / "orl"
MOBILEFACENET = SHARED / "models" / "mobilefacenet" / "MobileFaceNet.onnx"
CLIP_TOKENIZER = SHARED / "models" / "clip-tokenizer"


def _need(path: Path):
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder)")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _need(LFW)


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    return _need(ORL)


@pytest.fixture(scope="session")
def mobilefacenet_path() -> Path:
    return _need(MOBILEFACENET)


@pytest.fixture(scope="session")
def clip_tokenizer_dir() -> Path:
    return _need(CLIP_TOKENIZER)


@pytest.fixture(scope="session")
def dlib_analyzer():
    """dlib detection + dlib 128-d recogniser: fully offline from PyPI packages."""
    pytest.importorskip("dlib")
    from idgen.faces import FaceAnalyzer

    return FaceAnalyzer.from_backend("dlib", "dlib")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads waiting for
    each other made them 10–15× slower; the previous setting is restored after the module. Use it
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench(request):
    """The script ``benchmarks/<BENCHMARK>.py`` as a module, ``BENCHMARK`` set by the test module. The
    folder is on ``sys.path`` while it loads: the scripts import their siblings (``mini_identity``)."""
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(request.module.BENCHMARK)
    finally:
        sys.path.remove(folder)
