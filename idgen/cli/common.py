"""Options shared by several subcommands, so every command spells them the same way."""

from __future__ import annotations

import argparse


def add_face_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("face analysis")
    group.add_argument("--detector", default="dlib",
                       help="'dlib', or an insightface pack name/folder such as 'antelopev2' (default: dlib)")
    group.add_argument("--recognizer", default="dlib",
                       help="'dlib', 'mobilefacenet:PATH', an ONNX file, a file inside the insightface pack "
                            "(e.g. arcface.onnx), 'pack', or a folder written by `idgen fr train` (default: dlib)")
    group.add_argument("--insightface-root", default="~/.insightface", help="insightface model root")
    group.add_argument("--det-size", type=int, default=640, help="insightface detector input size")
    group.add_argument("--upsample", type=int, default=0, help="dlib detector upsampling (1 finds smaller faces)")
    group.add_argument("--flip", action="store_true", help="add the embedding of the mirrored face")
    group.add_argument("--fallback-box", type=float, default=None,
                       help="for pre-cropped sets: when no face is detected use a centred box of this "
                            "fraction of the image (e.g. 0.42 for LFW)")
    group.add_argument("--batch-size", type=int, default=64, help="faces per recogniser batch")


def analyzer_from_args(args):
    from ..faces import FaceAnalyzer

    return FaceAnalyzer.from_backend(
        args.detector, args.recognizer, root=args.insightface_root, det_size=args.det_size,
        upsample=args.upsample, flip=args.flip, fallback_box=args.fallback_box,
    )
