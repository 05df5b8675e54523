"""The Gradio page: one tab per task, each a thin wrapper around :mod:`idgen.application.actions`.

Every handler goes through :func:`friendly_errors`, so a photo without a face, a group photo or a
file that is not an image shows a one-line message in the page instead of a traceback. The long jobs
(Dataset, both Forget tabs) also go through :func:`cancellable`: their Cancel button stops them at the
next network call, and they leave no half-written output (:mod:`idgen.application.jobs`).

Each request writes into its own folder of the page's :class:`~idgen.application.workspace.Workspace`
(only the latest requests' folders are kept); closing the server deletes it all. The page reads no
server path a visitor names: Forget → Recogniser takes an uploaded zip, the Dataset tab's dataset or a
folder the operator allowed (:mod:`idgen.application.face_folders`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import re
import socket

import gradio as gr
from gradio import utils as gradio_utils

from ..application import ModelHub, actions
from ..application.face_folders import DATASET, default_source, face_sources, open_face_folder
from ..application.jobs import CancelToken, JobCancelled
from ..application.hub import MODEL_FLAGS
from ..application.workspace import Workspace
from ..config import SEED
from ..errors import IdgenError
from ..faces.analyzer import SEVERAL_FACES_HINT, TIGHT_CROP_HINT

logger = logging.getLogger(__name__)

TINY_BANNER = ("**Tiny random models.** This page runs with tiny, randomly initialised models so that it "
               "works offline in seconds: the images are noise and the numbers mean nothing. Start "
               "`python app.py` without `--tiny` for real Arc2Face / InstantID / InfiniteYou checkpoints.")


#: Advice in idgen's messages about options the page has no control for → what a visitor can do.
PAGE_ADVICE = {
    TIGHT_CROP_HINT: "upload a photo where the whole face shows, with some background around the head "
                     "(tightly cropped faces are often missed)",
    SEVERAL_FACES_HINT: "crop the photo to one person and upload it again",
}


def page_message(error: Exception) -> str:
    """``error``'s message as the page shows it: an upload's server path (Gradio's
    ``<upload folder>/<hash>/photo.jpg``) becomes the file's own name, and advice about command-line
    options becomes what the visitor can do in the page."""
    folders = {gradio_utils.get_upload_folder(), os.path.realpath(gradio_utils.get_upload_folder())}
    uploads = "|".join(re.escape(folder.rstrip(os.sep)) for folder in folders)
    text = re.sub(rf"(?:{uploads})/[^/\s]+/", "", str(error))
    for advice, in_the_page in PAGE_ADVICE.items():
        text = text.replace(advice, in_the_page)
    return text


def friendly_errors(handler):
    """Turn idgen's input errors into their own message in the page, and anything unexpected into a
    one-line message (the traceback goes to the server log, never to the visitor)."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (gr.Error, JobCancelled):
            raise
        except IdgenError as error:
            raise gr.Error(page_message(error), print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the page must never show a traceback
            logger.exception("demo handler %s failed", handler.__name__)
            raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). "
                           "The details are in the server log.", print_exception=False) from None

    return wrapper


_cancel_token: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar("idgen_cancel", default=None)


def cancel_token() -> CancelToken | None:
    """The token of the :func:`cancellable` job running in this thread (None outside one)."""
    return _cancel_token.get()


def cancellable(handler):
    """``handler`` as an async Gradio handler that runs it in a worker thread with a fresh
    :class:`CancelToken` (:func:`cancel_token` inside it).

    Gradio cancels an event (``cancels=[...]``, the client's ``job.cancel()``) by cancelling the
    asyncio task awaiting it; a plain function would run on to its end in its thread. Here the
    cancellation sets the token, the job stops at its next checkpoint and removes its staging folder,
    and only then does the task end: when the cancel request returns, no half-written output is left
    and the job's queue place is free again."""

    @functools.wraps(handler)
    async def run(*args, **kwargs):
        token = CancelToken()
        context = contextvars.copy_context()   # keeps Gradio's progress tracker (track_tqdm) for the thread
        context.run(_cancel_token.set, token)
        future = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(context.run, handler, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            token.cancel()
            try:
                await asyncio.shield(future)   # wait for the job to stop and clean up
            except BaseException:  # noqa: BLE001 - JobCancelled, or whatever it ended with: nobody waits for it
                pass
            logger.info("demo job %s cancelled", handler.__name__)
            raise

    return run


def _paths(files) -> list[str]:
    if files is None:
        return []
    return [str(f) for f in (files if isinstance(files, list) else [files])]


def _seed_field(label: str = "seed") -> gr.Number:
    return gr.Number(value=0, precision=0, minimum=0, maximum=SEED.at_most, label=label)


def _sampling_controls(default_steps: int, fast_info: str, fast_offered: bool):
    """Seed, steps, guidance and the fast-preset checkbox, which is greyed out (the note under it says
    what to download) when the preset cannot run here."""
    with gr.Row():
        seed = _seed_field()
        steps = gr.Slider(1, 50, value=default_steps, step=1, label="steps")
        guidance = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="guidance")
        fast = gr.Checkbox(value=False, label="fast preset (LCM-LoRA)" + ("" if fast_offered else ": not available here"),
                           interactive=fast_offered)
    gr.Markdown(fast_info)
    return seed, steps, guidance, fast


class DemoBlocks(gr.Blocks):
    """The page, with the :class:`Workspace` its requests write into: :meth:`close` (closing the
    server) deletes the workspace too."""

    def __init__(self, workspace: Workspace, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace

    def close(self, verbose: bool = True) -> None:
        super().close(verbose)
        self.workspace.close()


#: Gradio's own copies of uploads and results (its cache): checked hourly, deleted after an hour,
#: and all deleted when the server closes.
GRADIO_CACHE_LIFETIME = (3600, 3600)


def build_demo(hub: ModelHub, workspace: Workspace | None = None) -> DemoBlocks:
    """The page for ``hub``'s models, writing into ``workspace`` (default: a new one). Nothing is
    loaded until a tab first needs it."""
    workspace = workspace or Workspace()
    tiny = hub.settings.tiny
    default_steps = 2 if tiny else 25
    styles = ([("Arc2Face", "arc2face")] + ([("InstantID", "instantid")] if hub.instantid_available else [])
              + ([("InfiniteYou (FLUX)", "infiniteyou")] if hub.infiniteyou_available else []))
    fast_info = actions.fast_preset_description(hub)
    fast_styles = actions.fast_preset_styles(hub)
    prompted = hub.instantid_available or hub.infiniteyou_available   # the styles that take a prompt and a pose

    @friendly_errors
    def generate(photos, use_random, style, prompt, negative, pose, seed, steps, guidance, count, fast,
                 progress=gr.Progress()):
        photos = _paths(photos)
        if use_random:
            identity = actions.random_identity(hub, seed, style)
        elif not photos:
            raise gr.Error("Upload a face photo first, or tick 'random identity'.", print_exception=False)
        else:
            progress(0.0, desc="finding the face")
            identity = actions.identity_from_photos(hub, photos, style)
        pose_path = _paths(pose)[0] if pose else None
        detected = identity.annotated
        if style != "arc2face" and pose_path:
            progress(0.0, desc="finding the pose")
            detected = actions.side_by_side(detected, actions.annotated_photo(hub, pose_path, style))
        results = actions.generate_images(
            hub, identity, style=style, count=count, seed=seed, steps=int(steps), guidance=float(guidance),
            fast=bool(fast), prompt=prompt, negative_prompt=negative, pose_photo=pose_path, progress=progress)
        with workspace.request("generate") as folder:
            paths = actions.save_images([image for image, _ in results], folder / "images")
            archive = actions.zip_folder(folder / "images", folder / "images.zip")
        gallery = [(str(path), actions.caption(similarity)) for path, (_, similarity) in zip(paths, results)]
        return gallery, detected, str(archive), f"{len(results)} image(s) of {identity.source}"

    @friendly_errors
    def mix(photo_a, photo_b, t, seed, steps, guidance, fast, progress=gr.Progress()):
        if not photo_a or not photo_b:
            raise gr.Error("Upload two face photos (A and B).", print_exception=False)
        image, to_a, to_b = actions.mix_identities(hub, _paths(photo_a)[0], _paths(photo_b)[0], float(t),
                                                    seed=seed, steps=int(steps), guidance=float(guidance),
                                                    fast=bool(fast), progress=progress)
        fmt = lambda s: "no face found" if s is None else f"{s:.3f}"  # noqa: E731
        return image, f"similarity to A: {fmt(to_a)} · similarity to B: {fmt(to_b)}"

    @cancellable
    @friendly_errors
    def dataset(identities, per_identity, seed, steps, progress=gr.Progress()):
        """Also returns the Forget tab's source set to this dataset, and the visitor's token for it
        (the name of this request's folder, kept in a gr.State: it never reaches the browser)."""
        with workspace.request("dataset") as folder:
            result = actions.make_dataset(hub, folder, identities=int(identities), images_per_identity=int(per_identity),
                                          seed=seed, steps=int(steps), progress=progress, cancel=cancel_token())
        stats = result["stats"]
        summary = (f"{stats['images']} images of {stats['identities_with_images']} identities · "
                   f"counts: {stats['counts']}")
        return ([str(p) for p in result["samples"]], str(result["plot"]), str(result["zip"]), summary, DATASET,
                folder.name)

    @cancellable
    @friendly_errors
    def forget_generator(photos, seed, steps, radius, render_steps, progress=gr.Progress(track_tqdm=True)):
        with workspace.request("forget-generator") as folder:
            result = actions.forget_in_generator(hub, folder, _paths(photos), seed=seed, steps=int(steps),
                                                 radius=float(radius), render_steps=int(render_steps),
                                                 progress=progress, cancel=cancel_token())
        gallery = [(image, f"{name}: {actions.caption(similarity)}") for name, image, similarity in result["renders"]]
        text = f"Forgot **{result['identity'].source}** in a copy of the generator.\n\n{result['markdown']}"
        return gallery, text, str(result["zip"])

    @cancellable
    @friendly_errors
    def forget(source, upload, names, count, base_epochs, epochs, dataset_token,
               progress=gr.Progress(track_tqdm=True)):
        with workspace.request("forget") as folder, open_face_folder(
                source, allowed=hub.settings.allow_folders, workspace=workspace, workdir=folder,
                upload=(_paths(upload) or [None])[0], dataset=dataset_token) as faces:
            result = actions.forget_in_recognizer(hub, faces, folder, workspace.cache,
                                                  identities=(names or "").split(","), count=count,
                                                  base_epochs=base_epochs, epochs=epochs, progress=progress,
                                                  cancel=cancel_token())
        return result["markdown"], str(result["plot"])

    title = "idgen demo" + (" (tiny random models)" if tiny else "")
    with DemoBlocks(workspace, title=title, delete_cache=GRADIO_CACHE_LIFETIME) as demo:
        dataset_token = gr.State(None)   # the visitor's dataset: a workspace token, kept on the server
        gr.Markdown(f"# {title}\nIdentity-preserving face generation, synthetic datasets and identity mixing,\nidentity forgetting.")
        if tiny:
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner")
        gr.Markdown(f"Identity generator: {hub.settings.describe()}.", elem_id="model-line")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    photos = gr.File(file_count="multiple", label="face photo(s) of one person", elem_id="photos")
                    use_random = gr.Checkbox(value=False, label="random identity (ignore the photos)")
                    style = gr.Radio(styles, value="arc2face", label="style", visible=prompted)
                    if not prompted:
                        gr.Markdown(f"Style: Arc2Face, whose only condition is the identity. Text prompts and pose "
                                    f"photos need InstantID ({MODEL_FLAGS['instantid']}) or InfiniteYou "
                                    f"({MODEL_FLAGS['infiniteyou']}) when starting the demo.", elem_id="styles-note")
                    prompt = gr.Textbox(label="prompt (InstantID, InfiniteYou)", visible=prompted,
                                        placeholder="a portrait photo, studio light")
                    negative = gr.Textbox(label="negative prompt (InstantID)", visible=hub.instantid_available)
                    pose = gr.File(label="pose photo (InstantID, InfiniteYou; optional)", file_count="single",
                                   visible=prompted)
                    seed, steps, guidance, fast = _sampling_controls(default_steps, fast_info, bool(fast_styles))
                    count = gr.Slider(1, 8, value=2, step=1, label="images")
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    gallery = gr.Gallery(label="generated (caption: identity similarity to the photos, or to the "
                                               "random identity)", elem_id="gallery")
                    detected = gr.Image(label="detected face and keypoints", format="png")
                    download = gr.File(label="download (zip)")
                    status = gr.Markdown()
            go.click(generate, [photos, use_random, style, prompt, negative, pose, seed, steps, guidance, count, fast],
                     [gallery, detected, download, status], api_name="generate")
        with gr.Tab("Mix"):
            with gr.Row():
                photo_a = gr.File(label="face A", file_count="single")
                photo_b = gr.File(label="face B", file_count="single")
            t = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="from A (0) to B (1), on the identity sphere")
            seed_m, steps_m, guidance_m, fast_m = _sampling_controls(default_steps, fast_info,
                                                                  "arc2face" in fast_styles)
            mixed = gr.Image(label="mixed identity", format="png")
            mix_status = gr.Markdown()
            gr.Button("Mix", variant="primary").click(
                mix, [photo_a, photo_b, t, seed_m, steps_m, guidance_m, fast_m], [mixed, mix_status], api_name="mix")
        with gr.Tab("Dataset"):
            with gr.Row():
                n_ids = gr.Slider(2, 16, value=3, step=1, label="identities")
                per_id = gr.Slider(1, 8, value=2, step=1, label="images per identity")
                seed_d = _seed_field()
                steps_d = gr.Slider(1, 50, value=default_steps, step=1, label="steps")
            samples = gr.Gallery(label="sample images")
            plot = gr.Image(label="identity similarity statistics")
            archive = gr.File(label="dataset (zip)")
            summary = gr.Markdown()
            with gr.Row():
                dataset_button = gr.Button("Generate dataset", variant="primary")
                dataset_cancel = gr.Button("Cancel", variant="stop", elem_id="dataset-cancel")
        with gr.Tab("Forget"):
            with gr.Tab("Recogniser"):
                gr.Markdown("Train a small face recogniser on photos of people (one folder of photos per person: "
                            "a zip you upload, the dataset the Dataset tab made, or a server folder the operator "
                            "allowed), then make it forget some people with GS-LoRA and compare accuracies before "
                            "and after. The recogniser is trained once per set of photos and reused.")
                allowed = hub.settings.allow_folders
                with gr.Row():
                    source = gr.Dropdown(face_sources(allowed), value=default_source(allowed), label="faces from",
                                         elem_id="face-source")
                    upload = gr.File(label="photos (zip: one folder of photos per person)", file_count="single",
                                     file_types=[".zip"], elem_id="face-zip")
                with gr.Row():
                    names = gr.Textbox(label="people to forget (folder names, comma-separated; empty = draw)")
                    count_f = gr.Number(value=1, precision=0, minimum=1, label="how many to draw")
                with gr.Row():
                    base_epochs = gr.Slider(1, 60, value=5 if tiny else 40, step=1, label="recogniser training epochs")
                    epochs_f = gr.Slider(1, 30, value=2 if tiny else 10, step=1, label="forgetting epochs")
                report = gr.Markdown()
                groups = gr.Image(label="LoRA group norms")
                with gr.Row():
                    forget_button = gr.Button("Forget", variant="primary")
                    forget_cancel = gr.Button("Cancel", variant="stop", elem_id="forget-cancel")
                forget_event = forget_button.click(
                    forget, [source, upload, names, count_f, base_epochs, epochs_f, dataset_token], [report, groups],
                    api_name="forget")
                forget_cancel.click(None, cancels=[forget_event])
            with gr.Tab("Generator"):
                gr.Markdown("Make a copy of the Arc2Face generator forget a person (GS-LoRA on its identity "
                            "encoder): their conditioning moves to a neutral identity while other people's stays. "
                            "The other tabs keep the original generator.")
                with gr.Row():
                    forget_photos = gr.File(file_count="multiple", label="photo(s) of the person to forget "
                                                                         "(none: a random identity)")
                    with gr.Column():
                        seed_g = _seed_field("seed (random identity, renders)")
                        steps_g = gr.Slider(10, 1000, value=40 if tiny else 300, step=10, label="forgetting steps")
                        radius_g = gr.Slider(0.0, 0.95, value=0.5, step=0.05,
                                             label="radius (cosine: vectors this close to the person are forgotten too)")
                        render_g = gr.Slider(1, 50, value=default_steps, step=1, label="render steps")
                renders = gr.Gallery(label="the person before and after (caption: identity similarity)",
                                     elem_id="forget-renders", format="png")
                metrics = gr.Markdown()
                lora = gr.File(label="the forgetting LoRA (zip; pipe.load_lora_weights reads the folder)")
                with gr.Row():
                    forget_g_button = gr.Button("Forget in the generator", variant="primary")
                    forget_g_cancel = gr.Button("Cancel", variant="stop", elem_id="forget-generator-cancel")
                forget_g_event = forget_g_button.click(
                    forget_generator, [forget_photos, seed_g, steps_g, radius_g, render_g], [renders, metrics, lora],
                    api_name="forget_generator")
                forget_g_cancel.click(None, cancels=[forget_g_event])
        dataset_event = dataset_button.click(dataset, [n_ids, per_id, seed_d, steps_d],
                                             [samples, plot, archive, summary, source, dataset_token],
                                             api_name="dataset")
        dataset_cancel.click(None, cancels=[dataset_event])
    return demo


#: The port the demo asks for first; when it is taken, the next free one (and the page says so).
DEFAULT_PORT = 7860


def free_port(host: str, first: int | None = None, tries: int = 100) -> int:
    """``first`` (default ``$GRADIO_SERVER_PORT``, else :data:`DEFAULT_PORT`), or the next port after
    it that nothing listens on at ``host``; prints one line with the address when ``first`` is
    taken, so that moving to another port is never silent."""
    first = first if first is not None else int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT))
    for port in range(first, first + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        if port != first:
            print(f"idgen: port {first} is in use; the demo serves on http://{host}:{port} instead "
                  f"(choose a port with --port)", flush=True)
        return port
    raise OSError(f"no free port from {first} to {first + tries - 1} on {host}; choose one with --port")


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, concurrency: int = 1,
           max_queue: int = 16, max_file_size: str = "10mb", **kwargs):
    """Serve ``demo`` behind a queue: at most ``concurrency`` generations run at once, at most
    ``max_queue`` wait, and uploads above ``max_file_size`` are refused. Without ``port``, it is
    :data:`DEFAULT_PORT` or, when that is taken, the next free one (:func:`free_port` says which)."""
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    port = port if port is not None else free_port(host)
    return demo.launch(server_name=host, server_port=port, max_file_size=max_file_size, **kwargs)
