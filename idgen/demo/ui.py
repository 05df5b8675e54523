"""The Gradio page: one tab per task, each built by its own function (``_generate_tab``, ...) and a
thin wrapper around :mod:`idgen.application.actions`; :func:`build_demo` lists the tabs.

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


def _sampling_controls(page: _Page, fast_offered: bool):
    """Seed, steps, guidance and the fast-preset checkbox, which is greyed out (the note under it says
    what to download) when the preset cannot run here."""
    with gr.Row():
        seed = _seed_field()
        steps = gr.Slider(1, 50, value=page.default_steps, step=1, label="steps")
        guidance = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="guidance")
        fast = gr.Checkbox(value=False, label="fast preset (LCM-LoRA)" + ("" if fast_offered else ": not available here"),
                           interactive=fast_offered)
    gr.Markdown(actions.fast_preset_description(page.hub))
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


class _Page:
    """What the tabs share: the models, the workspace, the page's defaults, and the two components
    the Dataset tab hands to Forget → Recogniser: the visitor's dataset (a workspace token in a
    gr.State: it never reaches the browser) and the face-source list (made here unrendered, shown by
    Forget → Recogniser, set to the dataset by the Dataset tab)."""

    def __init__(self, hub: ModelHub, workspace: Workspace):
        self.hub, self.workspace, self.tiny = hub, workspace, hub.settings.tiny
        self.default_steps = 2 if self.tiny else 25
        self.dataset_token = gr.State(None)
        allowed = hub.settings.allow_folders
        self.face_source = gr.Dropdown(face_sources(allowed), value=default_source(allowed), label="faces from",
                                       elem_id="face-source", render=False)


def build_demo(hub: ModelHub, workspace: Workspace | None = None) -> DemoBlocks:
    """The page for ``hub``'s models, writing into ``workspace`` (default: a new one): a header and
    one tab per task. Nothing is loaded until a tab first needs it."""
    workspace = workspace or Workspace()
    title = "idgen demo" + (" (tiny random models)" if hub.settings.tiny else "")
    with DemoBlocks(workspace, title=title, delete_cache=GRADIO_CACHE_LIFETIME) as demo:
        page = _Page(hub, workspace)
        _header(page, title)
        with gr.Tab("Generate"):
            _generate_tab(page)
        with gr.Tab("Mix"):
            _mix_tab(page)
        with gr.Tab("Dataset"):
            _dataset_tab(page)
        with gr.Tab("Forget"):
            with gr.Tab("Recogniser"):
                _forget_recognizer_tab(page)
            with gr.Tab("Generator"):
                _forget_generator_tab(page)
    return demo


def _header(page: _Page, title: str) -> None:
    gr.Markdown(f"# {title}\nIdentity-preserving face generation, synthetic datasets and identity mixing,\n"
                "identity forgetting.")
    if page.tiny:
        gr.Markdown(TINY_BANNER, elem_id="tiny-banner")
    gr.Markdown(f"Identity generator: {page.hub.settings.describe()}.", elem_id="model-line")


def _job_buttons(handler, inputs, outputs, *, label: str, api_name: str, cancel_id: str) -> None:
    """A long job's start button and its Cancel button, which stops it (:func:`cancellable`)."""
    with gr.Row():
        start = gr.Button(label, variant="primary")
        cancel = gr.Button("Cancel", variant="stop", elem_id=cancel_id)
    cancel.click(None, cancels=[start.click(handler, inputs, outputs, api_name=api_name)])


#: The Generate tab's default Expression Adapter scale and Reference Adapter ("keep appearance") scale.
EXPRESSION_SCALE, REFERENCE_SCALE = 1.0, 0.8


def _generate_tab(page: _Page) -> None:
    """Photos of a person (or a random identity) → images of them in a chosen style."""
    hub = page.hub
    styles = ([("Arc2Face", "arc2face")] + ([("InstantID", "instantid")] if hub.instantid_available else [])
              + ([("InfiniteYou (FLUX)", "infiniteyou")] if hub.infiniteyou_available else []))
    prompted = hub.instantid_available or hub.infiniteyou_available   # the styles that take a prompt and a pose

    @friendly_errors
    def generate(photos, use_random, style, prompt, negative, pose, seed, steps, guidance, count, fast,
                 normal_map=None, expression_file=None, expression_photo=None, expression_scale=EXPRESSION_SCALE,
                 keep_appearance=False, reference_scale=REFERENCE_SCALE, progress=gr.Progress()):
        """The Arc2Face extension inputs have defaults, so that an API client may leave them out."""
        pose_photo, expression = _style_inputs(style, _paths(pose), _paths(normal_map), _paths(expression_file),
                                               _paths(expression_photo))
        identity, detected = _identity_and_faces(hub, _paths(photos), use_random, style, _paths(pose), seed, progress)
        results = actions.generate_images(
            hub, identity, style=style, count=count, seed=seed, steps=int(steps), guidance=float(guidance),
            fast=bool(fast), prompt=prompt, negative_prompt=negative, pose_photo=pose_photo, expression=expression,
            expression_scale=float(expression_scale), keep_appearance=bool(keep_appearance),
            reference_scale=float(reference_scale), progress=progress)
        with page.workspace.request("generate") as folder:
            paths = actions.save_images([image for image, _ in results], folder / "images")
            archive = actions.zip_folder(folder / "images", folder / "images.zip")
        gallery = [(str(path), actions.caption(similarity)) for path, (_, similarity) in zip(paths, results)]
        return gallery, detected, str(archive), f"{len(results)} image(s) of {identity.source}"

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
            pose = gr.File(label="pose photo (InstantID, InfiniteYou; optional)", file_count="single", visible=prompted)
            arc2face_controls = _arc2face_controls(hub)
            seed, steps, guidance, fast = _sampling_controls(page, bool(actions.fast_preset_styles(hub)))
            count = gr.Slider(1, 8, value=2, step=1, label="images")
            go = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column():
            gallery = gr.Gallery(label="generated (caption: identity similarity to the photos, or to the "
                                       "random identity)", elem_id="gallery")
            detected = gr.Image(label="detected face and keypoints", format="png")
            download = gr.File(label="download (zip)")
            status = gr.Markdown()
    go.click(generate, [photos, use_random, style, prompt, negative, pose, seed, steps, guidance, count, fast,
                        *arc2face_controls], [gallery, detected, download, status], api_name="generate")


def _arc2face_controls(hub: ModelHub) -> tuple:
    """The Generate tab's controls of Arc2Face's published extensions, each shown only when
    ``hub.settings.arc2face_extensions()`` says its files are here: a pose normal map (ControlNet);
    an expression as a FLAME parameters file, or as a photo when SMIRK is configured, and its scale
    (Expression Adapter); "keep appearance" and its scale (Reference Adapter)."""
    extensions = hub.settings.arc2face_extensions()
    posed, expressive, kept = "pose" in extensions, "expression" in extensions, "appearance" in extensions
    normal_map = gr.File(label="pose: a rendered face normal map (Arc2Face ControlNet; optional)", file_count="single",
                         file_types=["image"], visible=posed, elem_id="pose-normal-map")
    with gr.Row():
        expression_file = gr.File(label="expression: FLAME parameters (.npy / .json; Arc2Face; optional)",
                                  file_count="single", file_types=[".npy", ".json"], visible=expressive,
                                  elem_id="expression-file")
        expression_photo = gr.File(label="expression: a photo whose expression to copy (SMIRK; optional)",
                                   file_count="single", file_types=["image"], elem_id="expression-photo",
                                   visible=expressive and bool(hub.settings.smirk))
        expression_scale = gr.Slider(0.0, 2.0, value=EXPRESSION_SCALE, step=0.05, label="expression scale",
                                     visible=expressive, elem_id="expression-scale")
    with gr.Row():
        keep_appearance = gr.Checkbox(value=False, label="keep the photo's appearance and background (Arc2Face)",
                                      visible=kept, elem_id="keep-appearance")
        reference_scale = gr.Slider(0.0, 2.0, value=REFERENCE_SCALE, step=0.05, label="appearance (reference) scale",
                                    visible=kept, elem_id="reference-scale")
    return normal_map, expression_file, expression_photo, expression_scale, keep_appearance, reference_scale


def _style_inputs(style: str, pose: list[str], normal_map: list[str], expression_file: list[str],
                  expression_photo: list[str]) -> tuple:
    """The uploads ``generate_images`` takes as ``pose_photo`` and ``expression`` for ``style``: Arc2Face
    poses by the normal map, the other styles by the pose photo; an expression is Arc2Face's, from the
    parameters file or the photo (not both)."""
    if expression_file and expression_photo:
        raise gr.Error("Give the expression as a parameters file or as a photo, not both.", print_exception=False)
    expression = (expression_file or expression_photo or [None])[0]
    if style == "arc2face":
        if pose:
            raise gr.Error("The pose photo is for InstantID and InfiniteYou; Arc2Face takes a rendered face normal "
                           "map in its own field.", print_exception=False)
        return (normal_map or [None])[0], expression
    if normal_map:
        raise gr.Error("The pose normal map is for the Arc2Face style; the other styles take a pose photo.",
                       print_exception=False)
    return (pose or [None])[0], expression


def _identity_and_faces(hub: ModelHub, photos: list[str], use_random: bool, style: str, pose: list[str], seed,
                        progress) -> tuple[actions.IdentityInput, object]:
    """The Generate tab's identity (a random one, or from the photos) and the image of the detected
    face(s) it shows: the photo's, beside the pose photo's for the styles that take one."""
    if use_random:
        identity = actions.random_identity(hub, seed, style)
    elif not photos:
        raise gr.Error("Upload a face photo first, or tick 'random identity'.", print_exception=False)
    else:
        progress(0.0, desc="finding the face")
        identity = actions.identity_from_photos(hub, photos, style)
    if style == "arc2face" or not pose:
        return identity, identity.annotated
    progress(0.0, desc="finding the pose")
    return identity, actions.side_by_side(identity.annotated, actions.annotated_photo(hub, pose[0], style))


def _mix_tab(page: _Page) -> None:
    """Two photos and a slider: an image of the identity between them."""
    hub = page.hub

    @friendly_errors
    def mix(photo_a, photo_b, t, seed, steps, guidance, fast, progress=gr.Progress()):
        if not photo_a or not photo_b:
            raise gr.Error("Upload two face photos (A and B).", print_exception=False)
        image, to_a, to_b = actions.mix_identities(hub, _paths(photo_a)[0], _paths(photo_b)[0], float(t),
                                                    seed=seed, steps=int(steps), guidance=float(guidance),
                                                    fast=bool(fast), progress=progress)
        fmt = lambda s: "no face found" if s is None else f"{s:.3f}"  # noqa: E731
        return image, f"similarity to A: {fmt(to_a)} · similarity to B: {fmt(to_b)}"

    with gr.Row():
        photo_a = gr.File(label="face A", file_count="single")
        photo_b = gr.File(label="face B", file_count="single")
    t = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="from A (0) to B (1), on the identity sphere")
    seed, steps, guidance, fast = _sampling_controls(page, "arc2face" in actions.fast_preset_styles(hub))
    mixed = gr.Image(label="mixed identity", format="png")
    status = gr.Markdown()
    gr.Button("Mix", variant="primary").click(mix, [photo_a, photo_b, t, seed, steps, guidance, fast],
                                              [mixed, status], api_name="mix")


#: The Dataset tab's default retries of a render the filter refuses: enough that its default
#: dataset (3 identities × 2 images, seed 0) keeps an image of every identity on the embedded mini
#: model (docs/guides/demo.md, "How many retries the Dataset tab makes").
DATASET_RETRIES = 40
#: Images per row of the Dataset tab's grid.
DATASET_COLUMNS = 8


def _dataset_tab(page: _Page) -> None:
    """A small synthetic dataset: its kept images by identity, the counts, the similarity plot, a zip."""

    @cancellable
    @friendly_errors
    def dataset(identities, per_identity, seed, steps, retries, progress=gr.Progress()):
        """Also returns the Forget tab's source set to this dataset, and the visitor's token for it
        (the name of this request's folder)."""
        with page.workspace.request("dataset") as folder:
            result = actions.make_dataset(page.hub, folder, identities=int(identities),
                                          images_per_identity=int(per_identity), seed=seed, steps=int(steps),
                                          max_retries=int(retries), progress=progress, cancel=cancel_token())
        return (dataset_grid(result["images"]), str(result["plot"]), str(result["zip"]),
                dataset_counts(result["stats"], int(identities)), DATASET, folder.name)

    with gr.Row():
        identities = gr.Slider(2, 16, value=3, step=1, label="identities")
        per_identity = gr.Slider(1, 8, value=2, step=1, label="images per identity")
        seed = _seed_field()
        steps = gr.Slider(1, 50, value=page.default_steps, step=1, label="steps")
        retries = gr.Slider(0, 100, value=DATASET_RETRIES, step=1,
                            label="retries of a refused render")
    counts = gr.Markdown(elem_id="dataset-counts")
    grid = gr.Gallery(label="kept images, by identity", columns=DATASET_COLUMNS, object_fit="contain",
                      elem_id="dataset-grid", height="auto")
    plot = gr.Image(label="identity similarity statistics")
    archive = gr.File(label="dataset (zip)")
    _job_buttons(dataset, [identities, per_identity, seed, steps, retries],
                 [grid, plot, archive, counts, page.face_source, page.dataset_token],
                 label="Generate dataset", api_name="dataset", cancel_id="dataset-cancel")


def dataset_grid(images: list[dict]) -> list[tuple[str, str]]:
    """The Dataset tab's grid: each kept image (the dataset's manifest records, with their ``path``)
    captioned with its identity, grouped by identity in the dataset's order."""
    ordered = sorted(images, key=lambda record: (record["label"], record["index"]))
    return [(str(record["path"]), record["identity"] + ("" if record["similarity"] is None
                                                       else f" · similarity {record['similarity']:.2f}"))
            for record in ordered]


def _counted(number: int, singular: str, plural: str = "") -> str:
    """``number`` with ``singular`` when it is 1, else with ``plural`` (default: ``singular + "s"``)."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def dataset_counts(stats: dict, identities: int) -> str:
    """The Dataset tab's counts in words: what was kept, and why the other renders were refused."""
    counts = stats["counts"]
    text = (f"**{_counted(stats['images'], 'image')} of {stats['identities_with_images']} of "
            f"{_counted(identities, 'identity', 'identities')} kept**, from {_counted(counts['generated'], 'render')}. "
            f"Refused: {counts['no_face']} with no face found, {counts['low_similarity']} below the "
            f"identity-similarity threshold, {_counted(counts['duplicate'], 'duplicate')}.")
    if counts["dropped"]:
        text += " " + _counted(counts["dropped"], "image was still refused after its last retry.",
                               "images were still refused after their last retry.")
    return text


def _forget_recognizer_tab(page: _Page) -> None:
    """Train a small recogniser on photos of people, then make it forget some of them (GS-LoRA)."""
    hub, workspace = page.hub, page.workspace

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

    gr.Markdown("Train a small face recogniser on photos of people (one folder of photos per person: "
                "a zip you upload, the dataset the Dataset tab made, or a server folder the operator "
                "allowed), then make it forget some people with GS-LoRA and compare accuracies before "
                "and after. The recogniser is trained once per set of photos and reused.")
    with gr.Row():
        page.face_source.render()
        upload = gr.File(label="photos (zip: one folder of photos per person)", file_count="single",
                         file_types=[".zip"], elem_id="face-zip")
    with gr.Row():
        names = gr.Textbox(label="people to forget (folder names, comma-separated; empty = draw)")
        count = gr.Number(value=1, precision=0, minimum=1, label="how many to draw")
    with gr.Row():
        base_epochs = gr.Slider(1, 60, value=5 if page.tiny else 40, step=1, label="recogniser training epochs")
        epochs = gr.Slider(1, 30, value=2 if page.tiny else 10, step=1, label="forgetting epochs")
    report = gr.Markdown()
    groups = gr.Image(label="LoRA group norms")
    _job_buttons(forget, [page.face_source, upload, names, count, base_epochs, epochs, page.dataset_token],
                 [report, groups], label="Forget", api_name="forget", cancel_id="forget-cancel")


def _forget_generator_tab(page: _Page) -> None:
    """Make a copy of the generator forget a person; their render before and after."""

    @cancellable
    @friendly_errors
    def forget_generator(photos, seed, steps, radius, render_steps, progress=gr.Progress(track_tqdm=True)):
        with page.workspace.request("forget-generator") as folder:
            result = actions.forget_in_generator(page.hub, folder, _paths(photos), seed=seed, steps=int(steps),
                                                 radius=float(radius), render_steps=int(render_steps),
                                                 progress=progress, cancel=cancel_token())
        gallery = [(image, f"{name}: {actions.caption(similarity)}") for name, image, similarity in result["renders"]]
        text = f"Forgot **{result['identity'].source}** in a copy of the generator.\n\n{result['markdown']}"
        return gallery, text, str(result["zip"])

    gr.Markdown("Make a copy of the Arc2Face generator forget a person (GS-LoRA on its identity "
                "encoder): their conditioning moves to a neutral identity while other people's stays. "
                "The other tabs keep the original generator.")
    with gr.Row():
        photos = gr.File(file_count="multiple", label="photo(s) of the person to forget (none: a random identity)")
        with gr.Column():
            seed = _seed_field("seed (random identity, renders)")
            steps = gr.Slider(10, 1000, value=40 if page.tiny else 300, step=10, label="forgetting steps")
            radius = gr.Slider(0.0, 0.95, value=0.5, step=0.05,
                               label="radius (cosine: vectors this close to the person are forgotten too)")
            render_steps = gr.Slider(1, 50, value=page.default_steps, step=1, label="render steps")
    renders = gr.Gallery(label="the person before and after (caption: identity similarity)",
                         elem_id="forget-renders", format="png")
    metrics = gr.Markdown()
    lora = gr.File(label="the forgetting LoRA (zip; pipe.load_lora_weights reads the folder)")
    _job_buttons(forget_generator, [photos, seed, steps, radius, render_steps], [renders, metrics, lora],
                 label="Forget in the generator", api_name="forget_generator", cancel_id="forget-generator-cancel")


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
