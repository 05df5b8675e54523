"""Batched vs one-at-a-time face embedding on the same 500 LFW images, in one run.

    python benchmarks/embed_throughput.py [--lfw ../shared/data/lfw] [--images 500]

Detection and alignment run once; then each recogniser embeds the same crops (a) one face per
call, as a loop over ``FaceAnalyzer.get_face`` does, and (b) in batches, as ``analyze_many`` does.
Prints faces/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from idgen.faces import DlibDetector, DlibRecognizer, OnnxRecognizer, load_image

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw"))
    parser.add_argument("--mobilefacenet", default=str(ROOT.parent / "shared" / "models" / "mobilefacenet" / "MobileFaceNet.onnx"))
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    files = sorted(Path(args.lfw, "images").glob("*/*.jpg"))[: args.images]
    detector = DlibDetector()
    faces = []
    for path in files:
        rgb = load_image(path)
        found = detector.detect(rgb)
        if found:
            faces.append((rgb, found[0]))
    print(f"{len(faces)} faces from {len(files)} LFW images; batch size {args.batch_size}")
    print(f"{'recogniser':<16}{'one-at-a-time':>16}{'batched':>12}{'ratio':>8}")
    recognisers = {"mobilefacenet": OnnxRecognizer.mobilefacenet(args.mobilefacenet), "dlib-resnet": DlibRecognizer()}
    for name, recogniser in recognisers.items():
        crops = np.stack([recogniser.crop(rgb, d.landmarks, d.bbox) for rgb, d in faces])
        single = timed(lambda: [recogniser.embed(crops[i : i + 1]) for i in range(len(crops))])
        batched = timed(lambda: [recogniser.embed(crops[i : i + args.batch_size]) for i in range(0, len(crops), args.batch_size)])
        a = np.concatenate([recogniser.embed(crops[i : i + 1]) for i in range(8)])
        assert np.allclose(a, recogniser.embed(crops[:8]), atol=1e-4), "batched and single embeddings differ"
        n = len(crops)
        print(f"{name:<16}{n / single:>13.1f}/s{n / batched:>9.1f}/s{single / batched:>7.2f}x")


if __name__ == "__main__":
    main()
