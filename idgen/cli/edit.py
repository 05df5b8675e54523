"""``idgen edit``: replace a face in a photo with another identity, or re-render a photo keeping
its person; prints the identity similarities the edit reached."""

from __future__ import annotations

from PIL import Image

from ..config import FRACTION, IMAGE_SIDE
from ..errors import ConfigError
from ..io import atomic_path, check_output_file, read_npy
from .common import add_model_arguments, add_sampling_options, add_style_option, chosen_style, describe_style, number


def register(subparsers) -> None:
    parser = subparsers.add_parser("edit", help="edit a photo with an identity pipeline",
                                   description="Identity-aware photo editing with an Arc2Face, InstantID or "
                                               "InfiniteYou pipeline.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    replace = actions.add_parser("replace", help="put another person in place of a face",
                                 description="Inpaint the chosen face of --photo with the identity of "
                                             "--identity (a photo, or a .npy embedding from the same recogniser).")
    replace.add_argument("--identity", required=True, help="photo of the target person, or a .npy embedding")
    replace.add_argument("--face-index", default=None,
                         help="face to replace when there are several: index (largest first), '0,2', or 'all'")
    replace.add_argument("--strength", type=number(float, FRACTION), default=1.0,
                         help="inpainting strength, 0 to 1 (0 leaves the photo as is)")
    replace.set_defaults(handler=run_replace)

    restyle = actions.add_parser("restyle", help="re-render a photo keeping its person",
                                 description="img2img over the whole photo conditioned on the identity of "
                                             "its (chosen) face.")
    restyle.add_argument("--face-index", default=None, help="whose identity to keep when there are several faces (index)")
    restyle.add_argument("--strength", type=number(float, FRACTION), default=0.5,
                         help="how much of the photo is re-drawn (0–1)")
    restyle.set_defaults(handler=run_restyle)

    for action in (replace, restyle):
        action.add_argument("--photo", required=True, help="the photo to edit")
        action.add_argument("--output-file", required=True, help="where to write the edited image (.png, .jpg)")
        action.add_argument("--size", type=number(int, IMAGE_SIDE), default=None,
                            help=f"generation resolution, {IMAGE_SIDE.describe()} (default: the model's)")
        add_style_option(action)
        add_sampling_options(action)
        add_model_arguments(action)


def _face_choice(text: str | None):
    if text is None or text == "all":
        return text
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--face-index {text!r}: use an index, a comma-separated list of indices, or 'all'") from None
    return indices[0] if len(indices) == 1 else indices


def _load_pipeline(args):
    """The text-to-image pipeline of ``--style`` and its face analyser (the shared model options may override it);
    the edits derive their img2img / inpaint variant from it."""
    from ..application import ModelHub, settings_from_args

    hub = ModelHub(settings_from_args(args))
    style = chosen_style(args, hub.settings)
    print(f"idgen: {style}: {describe_style(style, hub.settings)}")
    return getattr(hub, style)(), hub.analyzer(style)


def _edit_settings(args) -> dict:
    import torch

    return {"strength": args.strength, "num_inference_steps": args.steps, "guidance_scale": args.guidance,
            "size": args.size, "face": _face_choice(args.face_index), "prompt": args.prompt or None,
            "generator": torch.Generator().manual_seed(args.seed)}


def _output_format(path: str) -> str:
    """The image format ``--output-file``'s extension names, after checking the file can be written there
    (before any model loads)."""
    extension = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ConfigError(f"--output-file {path}: unknown image type; use .png or .jpg")
    check_output_file(path, "--output-file")
    return image_format


def _save(image: Image.Image, path: str, image_format: str) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format=image_format)


def run_replace(args) -> int:
    from ..edit import replace_identity

    image_format = _output_format(args.output_file)
    identity = (read_npy(args.identity, "save the embedding as a numeric array with np.save")
                if args.identity.endswith(".npy") else args.identity)
    pipe, analyzer = _load_pipeline(args)
    result = replace_identity(args.photo, identity, pipe=pipe, analyzer=analyzer, **_edit_settings(args))
    _save(result.image, args.output_file, image_format)
    for index, to_target, to_original in zip(result.faces, result.similarity_to_target, result.similarity_to_original):
        print(f"face {index}: similarity to target {to_target:.3f}, to original person {to_original:.3f}")
    print(f"wrote {args.output_file}")
    return 0


def run_restyle(args) -> int:
    from ..edit import restyle

    image_format = _output_format(args.output_file)
    pipe, analyzer = _load_pipeline(args)
    result = restyle(args.photo, pipe=pipe, analyzer=analyzer, **_edit_settings(args))
    _save(result.image, args.output_file, image_format)
    print(f"face {result.faces[0]}: similarity to the original person {result.similarity_to_target[0]:.3f}")
    print(f"wrote {args.output_file}")
    return 0
