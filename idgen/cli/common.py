"""Options shared by the subcommands and ``python app.py``: each is defined once, here, so every
command spells it the same way and has the same default (an ``IDGEN_*`` variable overrides it).

Nothing here imports :mod:`idgen.demo` (whose package imports gradio): building the ``idgen`` parser,
``idgen --help`` and every subcommand but the demo's own run step stay gradio-free. The defaults
and ``IDGEN_*`` variables come from :data:`idgen.application.hub.ENVIRONMENT`
(:func:`~idgen.application.hub.environment_default` resolves them)."""

from __future__ import annotations

import argparse

from ..application.hub import ANALYSIS_FACE_BACKENDS, ENVIRONMENT, STYLES, environment_default, resolve_face_backends
from ..config import BOX, DENOISING_STEPS, DET_SIZE, FACE_BATCH, SEED, UPSAMPLE, Range


def number(kind: type, allowed: Range):
    """An argparse ``type`` reading an int or a float (``kind``) in ``allowed``; anything else is refused
    with the range in the message (``argument --count: must be an integer from 1 to 64, got 0``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed.describe(kind)}, got {text!r}") from None
        if not allowed.allows(value):
            raise argparse.ArgumentTypeError(f"must be {allowed.describe(kind)}, got {text}")
        return value

    return parse


def add_face_options(parser: argparse.ArgumentParser) -> None:
    """Which face detector and recogniser to use (every command that looks at faces)."""
    group = parser.add_argument_group("face analysis")
    group.add_argument("--detector", default=environment_default("detector"),
                       help="'dlib', or an insightface pack name/folder such as 'antelopev2' ($IDGEN_DETECTOR; "
                            "default auto: for generate/edit/the demo each model's own, for embed/eval dlib)")
    group.add_argument("--recognizer", default=environment_default("recognizer"),
                       help="'dlib', 'mobilefacenet:PATH', 'iresnet:PATH' (an insightface arcface_torch backbone.pth), "
                            "'ir_se50:PATH' (facexlib's recognition_arcface_ir_se50.pth), an ONNX file, a file inside "
                            "the insightface pack (e.g. arcface.onnx), 'pack', or a folder written by `idgen recognizer "
                            "train --architecture mobilefacenet` (or iresnet) ($IDGEN_RECOGNIZER; default auto: for "
                            "generate/edit/the demo the one each model was trained on (Arc2Face: arcface.onnx, "
                            "InstantID: glintr100.onnx, InfiniteYou: ir_se50:recognition_arcface_ir_se50.pth; "
                            "another one gets a warning), for embed/eval dlib)")
    group.add_argument("--insightface-root", default=environment_default("insightface_root"),
                       help="insightface model root ($IDGEN_INSIGHTFACE_ROOT; default ~/.insightface)")
    group.add_argument("--det-size", type=number(int, DET_SIZE), default=640,
                       help=f"insightface detector input size, {DET_SIZE.describe()} (default 640)")
    group.add_argument("--upsample", type=number(int, UPSAMPLE), default=0,
                       help=f"dlib detector upsampling, {UPSAMPLE.describe()} (1 finds smaller faces)")


def add_embedding_options(parser: argparse.ArgumentParser) -> None:
    """How embeddings are computed in bulk (embed, eval)."""
    group = parser.add_argument_group("embedding")
    group.add_argument("--flip", action="store_true", help="add the embedding of the mirrored face")
    group.add_argument("--fallback-box", type=number(float, BOX), default=None,
                       help="for pre-cropped sets: when no face is detected use a centred box of this "
                            "fraction of the image (e.g. 0.42 for LFW)")
    group.add_argument("--batch-size", type=number(int, FACE_BATCH), default=64,
                       help=f"faces per recogniser batch, {FACE_BATCH.describe()}")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """Where and in which precision models run (every command that runs a diffusion model)."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", default=environment_default("device"),
                       help="torch device ($IDGEN_DEVICE; default: cuda when available, else cpu)")
    group.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=environment_default("dtype"),
                       help="weights dtype ($IDGEN_DTYPE; default: float16 on GPU, float32 on CPU)")


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Denoising settings (generate, edit); ``None`` means the pipeline's own default."""
    group = parser.add_argument_group("sampling")
    group.add_argument("--prompt", default="",
                       help="text prompt (InstantID and InfiniteYou; Arc2Face's only condition is the identity)")
    group.add_argument("--seed", type=number(int, SEED), default=0,
                       help=f"random seed, {SEED.describe()} (image k of a batch uses seed + k)")
    group.add_argument("--steps", type=number(int, DENOISING_STEPS), default=None,
                       help=f"denoising steps, {DENOISING_STEPS.describe()} (default: the pipeline's, 25 for Arc2Face, "
                            "30 for InstantID and InfiniteYou)")
    group.add_argument("--guidance", type=number(float, Range(0)), default=None,
                       help="guidance scale (default: the pipeline's, 3.0 for Arc2Face, 5.0 for InstantID, "
                            "3.5 for InfiniteYou: FLUX.1-dev's embedded guidance)")


def add_style_option(parser: argparse.ArgumentParser) -> None:
    """Which identity pipeline runs (generate, edit)."""
    parser.add_argument("--style", choices=STYLES, default=None,
                        help="default: instantid when --instantid is set, else infiniteyou when --infiniteyou is "
                             "set, else arc2face")


def chosen_style(args, settings) -> str:
    """``--style``, or the default it documents for these model ``settings``."""
    return args.style or ("instantid" if settings.instantid else "infiniteyou" if settings.infiniteyou else "arc2face")


def describe_style(style: str, settings) -> str:
    """Which checkpoints the ``style`` pipeline comes from, and why, for the line a command prints first."""
    if style == "arc2face" or settings.tiny:
        return settings.describe()
    if getattr(settings, style) is None:
        return "not configured"
    if style == "instantid":
        return f"InstantID {settings.instantid} on {settings.instantid_base} (--instantid is set)"
    return (f"InfiniteYou {settings.infiniteyou} ({settings.infiniteyou_variant}) on {settings.infiniteyou_base} "
            f"(--infiniteyou is set)")


def add_model_arguments(parser) -> None:
    """The model flags of ``python app.py``, ``idgen generate`` and ``idgen edit`` (each defaults to
    its ``IDGEN_*`` variable, then to the built-in default), with the shared face and device options.
    Values become settings with
    :func:`idgen.application.settings_from_args`."""

    def env(name):
        variable, default = ENVIRONMENT[name]
        return f"${variable}" + (f"; default {default}" if default else "")

    group = parser.add_argument_group("models (hub ids or local folders)")
    group.add_argument("--base", help=f"SD 1.5 base for Arc2Face ({env('base')})")
    group.add_argument("--model", help=f"'mini' (the embedded model: 64x64 faces, offline) or a saved idgen Arc2Face "
                                       f"pipeline folder, instead of --base/--arc2face ({env('model')}; default: "
                                       f"Arc2Face when downloaded, else mini)")
    group.add_argument("--arc2face", help=f"Arc2Face checkpoint with arc2face/ and encoder/ ({env('arc2face')})")
    group.add_argument("--instantid", help=f"InstantID folder or hub id, e.g. InstantX/InstantID "
                                           f"({env('instantid')}; default: InstantID off)")
    group.add_argument("--instantid-base", help=f"SDXL base for InstantID ({env('instantid_base')})")
    group.add_argument("--infiniteyou", help=f"InfiniteYou folder or hub id, e.g. ByteDance/InfiniteYou "
                                             f"({env('infiniteyou')}; default: InfiniteYou off)")
    group.add_argument("--infiniteyou-base", help=f"FLUX.1-dev base for InfiniteYou ({env('infiniteyou_base')})")
    group.add_argument("--infiniteyou-variant", help=f"InfiniteYou weights: aes_stage2 (aesthetics) or sim_stage1 "
                                                     f"(identity similarity) ({env('infiniteyou_variant')})")
    group.add_argument("--lcm-lora", help=f"LCM-LoRA of the fast preset for Arc2Face, hub id or folder ({env('lcm_lora')})")
    group.add_argument("--lcm-lora-sdxl", help=f"LCM-LoRA of the fast preset for InstantID ({env('lcm_lora_sdxl')})")
    group.add_argument("--tiny", action="store_true", default=None,
                       help="tiny random models built in code, offline (for trying things out and tests)")
    add_face_options(parser)
    add_device_options(parser)


def analyzer_from_args(args):
    """The face analyser of an analysis command (embed, eval): ``--detector`` / ``--recognizer``, dlib by default."""
    from ..faces import FaceAnalyzer

    detector, recognizer = resolve_face_backends(args.detector, args.recognizer, ANALYSIS_FACE_BACKENDS)
    return FaceAnalyzer.from_backend(
        detector, recognizer, root=args.insightface_root, det_size=args.det_size, upsample=args.upsample,
        flip=getattr(args, "flip", False), fallback_box=getattr(args, "fallback_box", None),
    )
