"""``idgen eval verify``: face verification accuracy with the LFW protocol."""

from __future__ import annotations

import json

from .common import add_embedding_options, add_face_options, analyzer_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate recognisers and generators")
    commands = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    verify = commands.add_parser(
        "verify", help="verification accuracy on a pairs file (LFW protocol)",
        description="Embed every image of an LFW-format pairs file, then report 10-fold accuracy "
                    "(threshold chosen on 9 folds, applied to the 10th), AUC and TAR@FAR=1e-3.",
    )
    verify.add_argument("--pairs", required=True, help="pairs file, e.g. lfw/pairs.txt (View 2)")
    verify.add_argument("--images", required=True, help="image root: <root>/<Name>/<Name>_<NNNN>.jpg")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    add_face_options(verify)
    add_embedding_options(verify)
    verify.set_defaults(handler=run_verify)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def run_verify(args) -> int:
    from ..eval import read_pairs, verify_pairs

    pairs = read_pairs(args.pairs, args.images)
    result = verify_pairs(analyzer_from_args(args), pairs, batch_size=args.batch_size, progress=not args.json)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0
