"""``idgen edit``: replace a face in a photo with another identity, or re-render a photo keeping
its person; prints the identity similarities the edit reached."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..io import atomic_path
from .common import add_face_options, analyzer_from_args

SD15_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"


def register(subparsers) -> None:
    parser = subparsers.add_parser("edit", help="edit a photo with an identity pipeline",
                                   description="Identity-aware photo editing with an Arc2Face or InstantID pipeline.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    replace = actions.add_parser("replace", help="put another person in place of a face",
                                 description="Inpaint the chosen face of --photo with the identity of "
                                             "--identity (a photo, or a .npy embedding from the same recogniser).")
    replace.add_argument("--identity", required=True, help="photo of the target person, or a .npy embedding")
    replace.add_argument("--face", default=None,
                         help="face to replace when there are several: index (largest first), '0,2', or 'all'")
    replace.add_argument("--strength", type=float, default=1.0, help="inpainting strength (0 leaves the photo as is)")
    replace.set_defaults(handler=run_replace)

    restyle = actions.add_parser("restyle", help="re-render a photo keeping its person",
                                 description="img2img over the whole photo conditioned on the identity of "
                                             "its (chosen) face.")
    restyle.add_argument("--face", default=None, help="whose identity to keep when there are several faces (index)")
    restyle.add_argument("--strength", type=float, default=0.5, help="how much of the photo is re-drawn (0–1)")
    restyle.set_defaults(handler=run_restyle)

    for action in (replace, restyle):
        action.add_argument("--photo", required=True, help="the photo to edit")
        action.add_argument("--out", required=True, help="where to write the edited image (.png, .jpg)")
        models = action.add_argument_group("model (one of --model, --arc2face, --instantid)")
        models.add_argument("--model", help="a saved idgen Arc2Face pipeline folder (save_pretrained layout)")
        models.add_argument("--arc2face", help="Arc2Face checkpoint (hub id or folder: arc2face/, encoder/)")
        models.add_argument("--instantid", help="InstantID checkpoint (hub id or folder: ControlNetModel/, "
                                                "ip-adapter.bin)")
        models.add_argument("--base", default=None, help=f"base model for --arc2face (default {SD15_BASE}) or "
                                                         f"--instantid (default {SDXL_BASE})")
        action.add_argument("--prompt", default=None, help="text for InstantID edits (Arc2Face takes none)")
        action.add_argument("--steps", type=int, default=None, help="denoising steps (pipeline default: 25)")
        action.add_argument("--guidance", type=float, default=None, help="guidance scale (pipeline default: 3.0)")
        action.add_argument("--size", type=int, default=None, help="generation resolution (default: the UNet's)")
        action.add_argument("--seed", type=int, default=0)
        action.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
        add_face_options(action)


def _face_choice(text: str | None):
    if text is None or text == "all":
        return text
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--face {text!r}: use an index, a comma-separated list of indices, or 'all'") from None
    return indices[0] if len(indices) == 1 else indices


def _load_pipeline(args):
    """The text-to-image pipeline the options name; the edits derive their variant from it."""
    import torch
    from diffusers import ControlNetModel

    from ..pipelines import Arc2FacePipeline, InstantIDPipeline

    if sum(bool(x) for x in (args.model, args.arc2face, args.instantid)) != 1:
        raise ConfigError("pass one of --model FOLDER (a saved Arc2Face pipeline), --arc2face CHECKPOINT or "
                          "--instantid CHECKPOINT (each with an optional --base)")
    if args.model:
        pipe = Arc2FacePipeline.from_pretrained(args.model)
    elif args.arc2face:
        pipe = Arc2FacePipeline.from_arc2face(args.base or SD15_BASE, args.arc2face)
    else:
        identitynet = ControlNetModel.from_pretrained(args.instantid, subfolder="ControlNetModel")
        pipe = InstantIDPipeline.from_pretrained(args.base or SDXL_BASE, controlnet=identitynet)
        pipe.load_instantid_adapter(args.instantid)
    pipe.to(torch.device(args.device))
    return pipe


def _edit_settings(args) -> dict:
    import torch

    return {"strength": args.strength, "num_inference_steps": args.steps, "guidance_scale": args.guidance,
            "size": args.size, "face": _face_choice(args.face), "prompt": args.prompt,
            "generator": torch.Generator(device=args.device).manual_seed(args.seed)}


def _save(image: Image.Image, path: str) -> None:
    extension = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ConfigError(f"--out {path}: unknown image type; use .png or .jpg")
    with atomic_path(path) as tmp:
        image.save(tmp, format=image_format)


def run_replace(args) -> int:
    from ..edit import replace_identity

    identity = np.load(args.identity) if args.identity.endswith(".npy") else args.identity
    pipe = _load_pipeline(args)
    result = replace_identity(args.photo, identity, pipe=pipe, analyzer=analyzer_from_args(args),
                              **_edit_settings(args))
    _save(result.image, args.out)
    for index, to_target, to_original in zip(result.faces, result.similarity_to_target, result.similarity_to_original):
        print(f"face {index}: similarity to target {to_target:.3f}, to original person {to_original:.3f}")
    print(f"wrote {args.out}")
    return 0


def run_restyle(args) -> int:
    from ..edit import restyle

    pipe = _load_pipeline(args)
    result = restyle(args.photo, pipe=pipe, analyzer=analyzer_from_args(args), **_edit_settings(args))
    _save(result.image, args.out)
    print(f"face {result.faces[0]}: similarity to the original person {result.similarity_to_target[0]:.3f}")
    print(f"wrote {args.out}")
    return 0
