"""``idgen embed``: identity embeddings of a folder of photos."""

from __future__ import annotations

import sys
from pathlib import Path


from ..errors import ConfigError
from ..io import check_output_file
from .common import add_embedding_options, add_face_options, analyzer_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed", help="embed every face photo in a folder",
        description="Write one embedding per image (largest face) to a safetensors file plus a JSON "
                    "index; images with no face or that cannot be read are skipped and reported.",
    )
    parser.add_argument("folder", help="folder of images (searched recursively)")
    parser.add_argument("--output-file", required=True, help="output .safetensors file; the index goes beside it as .json")
    add_face_options(parser)
    add_embedding_options(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..faces import iter_image_files
    from ..faces.embedding_index import embed_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder")
    files = list(iter_image_files(folder))
    if not files:
        raise ConfigError(f"{folder}: no image files (.jpg, .png, ...) found")
    check_output_file(args.output_file, "--output-file")
    index = embed_folder(analyzer_from_args(args), files, args.output_file, root=folder, batch_size=args.batch_size)
    print(f"embedded {len(index['files'])} of {len(files)} images -> {args.output_file}")
    for skipped in index["skipped"]:
        print(f"  skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
    return 0 if index["files"] else 1
