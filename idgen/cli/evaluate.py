"""``idgen eval verify``: face verification accuracy with the LFW protocol, on a pairs file and its
images or on an insightface ``.bin`` verification set."""

from __future__ import annotations

import json

from .common import add_embedding_options, add_face_options, analyzer_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate recognisers and generators")
    commands = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    verify = commands.add_parser(
        "verify", help="verification accuracy on a pairs file (LFW protocol) or an insightface .bin",
        description="Embed every image of an LFW-format pairs file (--pairs and --images), or of an insightface "
                    "verification set (--bin: lfw.bin, cfp_fp.bin, agedb_30.bin, ...; its crops are already "
                    "aligned, so nothing is detected), then report 10-fold accuracy (threshold chosen on 9 folds, "
                    "applied to the 10th; for a .bin, 10 blocks of consecutive pairs as insightface does), AUC "
                    "and TAR@FAR=1e-3. With --occlude, each pair's second photo is scored occluded (seeded, "
                    "reproducible), to measure robustness to occlusion and noise.",
    )
    verify.add_argument("--pairs", help="pairs file, e.g. lfw/pairs.txt (View 2); with --images")
    verify.add_argument("--images", help="image root: <root>/<Name>/<Name>_<NNNN>.jpg; with --pairs")
    verify.add_argument("--bin", metavar="PATH",
                        help="an insightface verification set (.bin) instead of --pairs/--images: aligned crops, "
                             "read without running any code in the pickle")
    verify.add_argument("--occlude", choices=["patch", "glasses", "mask", "noise"],
                        help="score each pair's second photo occluded on its aligned crop: random rectangles "
                             "(patch), a dark band over the eyes (glasses), a band over nose and mouth (mask) or "
                             "Gaussian noise (noise)")
    verify.add_argument("--severity", type=float,
                        help="with --occlude: the fraction of the crop covered (patch: of its area, 0.1-0.4; "
                             "glasses, mask: of its height, 0.05-0.4) or the noise standard deviation as a "
                             "fraction of 255 (0.01-0.5)")
    verify.add_argument("--occlusion-seed", type=int, default=0,
                        help="with --occlude: seed of the occlusions; the same seed draws the same pixels "
                             "(default 0)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    add_face_options(verify)
    add_embedding_options(verify)
    verify.set_defaults(handler=run_verify)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def run_verify(args) -> int:
    from ..errors import ConfigError
    from ..eval import read_bin, read_pairs, verify_bin, verify_pairs
    from ..faces.occlusion import Occlusion

    if args.bin and (args.pairs or args.images):
        raise ConfigError("--bin is instead of --pairs/--images; give one or the other")
    if not args.bin and not (args.pairs and args.images):
        raise ConfigError("give --pairs and --images (an LFW-format pairs file and its image root), or --bin "
                          "(an insightface verification set)")
    if (args.severity is None) != (args.occlude is None):
        raise ConfigError("--occlude and --severity go together: give both (e.g. --occlude mask --severity 0.3) "
                          "or neither")
    occlusion = Occlusion(args.occlude, args.severity, args.occlusion_seed) if args.occlude else None
    if args.bin:
        pairs = read_bin(args.bin)   # read (and refused, if unsafe) before any model loads
        result = verify_bin(analyzer_from_args(args), pairs, batch_size=args.batch_size, progress=not args.json,
                            occlusion=occlusion)
    else:
        pairs = read_pairs(args.pairs, args.images)
        result = verify_pairs(analyzer_from_args(args), pairs, batch_size=args.batch_size, progress=not args.json,
                              occlusion=occlusion)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0
