"""What each task does, as plain functions of a :class:`~idgen.application.hub.ModelHub` and inputs.

They know nothing about Gradio, so the CLI and the tests call them directly; the demo page wraps them
(:mod:`idgen.demo.ui`). ``progress`` is any ``callable(fraction, desc=...)`` (``gr.Progress`` is
one). Bad inputs raise :mod:`idgen.errors` exceptions whose message names the file and the fix.

The long jobs (:func:`make_dataset`, :func:`forget_in_recognizer`, :func:`forget_in_generator`) work
in a folder the caller gives them (the demo: one request's folder of its
:class:`~idgen.application.workspace.Workspace`) and take a ``cancel`` token (:mod:`.jobs`):
cancelled, they stop at the next network call with :class:`~idgen.application.jobs.JobCancelled`
and leave no output behind; their folders appear (one rename) only when finished.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..config import SEED, Range
from ..errors import ConfigError, ImageReadError
from ..identity import normalize, random_identities, slerp
from ..io import atomic_folder, atomic_path
from .face_folders import FaceFolder
from .jobs import CancelToken, checked, checkpoints
from .hub import STYLES, ModelHub
from .workspace import FolderLRU

Progress = Callable[..., None]

def check_range(name: str, value, allowed: Range) -> int:
    """``value`` as an int when it is a whole number that ``allowed`` allows (the ranges the config
    files declare, e.g. :data:`~idgen.config.SEED`), else a ConfigError that names ``name`` and the range."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):   # None, NaN, infinity
        number = None
    if number is None or number != value or not allowed.allows(number):
        raise ConfigError(f"{name} must be {allowed.describe(int)}, not {value}")
    return number


def _no_progress(fraction, desc=None):
    pass


def draw_faces(image: np.ndarray, faces) -> np.ndarray:
    """The photo with each face's box and its five keypoints drawn on it."""
    import cv2

    canvas = image.copy()
    thickness = max(2, image.shape[1] // 300)
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        for x, y in face.landmarks:
            cv2.circle(canvas, (int(x), int(y)), 2 * thickness, (255, 0, 0), -1)
    return canvas


def annotated_photo(hub: ModelHub, photo, style: str = "arc2face") -> np.ndarray:
    """``photo`` with its one face's box and keypoints drawn, as ``style``'s analyser finds them (errors
    name the photo)."""
    from ..faces import load_image

    return draw_faces(load_image(photo), [hub.analyzer(style).get_face(photo, policy="single")])


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two RGB images next to each other, the right one scaled to the left one's height."""
    height = left.shape[0]
    width = max(1, round(right.shape[1] * height / right.shape[0]))
    scaled = np.asarray(Image.fromarray(right).resize((width, height), Image.BILINEAR))
    return np.concatenate([left, scaled], axis=1)


@dataclass
class IdentityInput:
    """The identity to generate: a unit vector in the embedding space of ``style``'s recogniser, and the
    photos and faces it came from (if any)."""

    vector: torch.Tensor
    faces: list = field(default_factory=list)
    annotated: Optional[np.ndarray] = None
    source: str = "random identity"
    photos: list = field(default_factory=list)
    style: str = "arc2face"


def identity_dim(hub: ModelHub, style: str = "arc2face") -> int:
    """Length of the embeddings of ``style``'s recogniser (512 for ArcFace, 128 for dlib)."""
    size = getattr(hub.analyzer(style).recognizer, "embedding_size", None)
    if size is None:
        raise ConfigError("the face recogniser does not report its embedding size; upload a photo instead")
    return int(size)


def identity_from_photos(hub: ModelHub, photos: Sequence, style: str = "arc2face") -> IdentityInput:
    """One identity for the ``style`` model from one or more photos of a person: the normalised mean of
    their embeddings by that model's recogniser.

    Each photo must show exactly one face (group photos are refused so the identity is never
    silently taken from the wrong person)."""
    from ..faces import load_image

    analyzer = hub.analyzer(style)
    if not photos:
        raise ImageReadError("no photo given; upload a face photo or tick 'random identity'")
    faces = [analyzer.get_face(photo, policy="single") for photo in photos]  # errors name the photo
    first_image = load_image(photos[0])
    vector = normalize(torch.from_numpy(np.stack([f.normed_embedding for f in faces]).astype(np.float32)).mean(0))
    names = ", ".join(Path(str(p)).name for p in photos)
    return IdentityInput(vector, faces, draw_faces(first_image, faces[:1]), source=names, photos=list(photos),
                         style=style)


def random_identity(hub: ModelHub, seed: int, style: str = "arc2face") -> IdentityInput:
    """A random unit vector as long as the embeddings of ``style``'s recogniser, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(check_range("seed", seed, SEED))
    return IdentityInput(random_identities(1, identity_dim(hub, style), generator=generator)[0], style=style)


def similarity_to(hub: ModelHub, image: Image.Image, identity: torch.Tensor,
                  style: str = "arc2face") -> Optional[float]:
    """Cosine similarity between the largest face in ``image`` and ``identity``, by ``style``'s recogniser;
    ``None`` when the image holds no detectable face (common for tiny random models)."""
    faces = hub.analyzer(style).analyze(np.asarray(image.convert("RGB")))
    if not faces:
        return None
    face = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
    return float(np.dot(face.normed_embedding, identity.numpy()))


def caption(similarity: Optional[float]) -> str:
    return "no face found in the result" if similarity is None else f"identity similarity {similarity:.3f}"


def time_left(seconds: float) -> str:
    """A duration in words a progress line can show: ``"40 s"``, ``"3 min"``, ``"1 h 5 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class WorkProgress:
    """``total`` units of work (denoising steps of images, say) reported to ``progress`` as they are
    done: the fraction runs from ``start`` to ``end``, and the description says how far the job is
    and, from the rate so far, about how long it has left. Units beyond ``total`` (images a filter
    refused and made again) keep the fraction at ``end``."""

    def __init__(self, progress: Progress, total: int, describe: Callable[[int], str], *, start: float = 0.0,
                 end: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.progress, self.total, self.describe = progress, max(1, int(total)), describe
        self.start, self.end, self.clock = start, end, clock
        self.done, self.began = 0, clock()

    def advance(self, units: int = 1) -> None:
        self.done += units
        left = (self.clock() - self.began) * max(0, self.total - self.done) / self.done
        fraction = min(1.0, self.done / self.total)
        self.progress(self.start + (self.end - self.start) * fraction,
                      desc=f"{self.describe(min(self.done, self.total))} · about {time_left(left)} left")


def _step_callback(progress: Progress, images: int):
    def on_step_end(pipe, step, timestep, callback_kwargs):
        steps = pipe.num_timesteps
        progress((step + 1) / steps, desc=f"denoising {images} image(s): step {step + 1}/{steps}")
        return callback_kwargs

    return on_step_end


def fast_preset_styles(hub: ModelHub) -> list[str]:
    """The offered styles whose fast preset (LCM-LoRA) can run on this machine."""
    offered = ["arc2face"] + (["instantid"] if hub.instantid_available else [])
    return [style for style in offered if hub.settings.fast_preset_unavailable(style) is None]


def fast_preset_description(hub: ModelHub) -> str:
    """What the fast preset does with ``hub``'s settings, in one sentence for the page, and for each
    offered style where it cannot run here, why and what to download."""
    from ..pipelines.pipeline_arc2face import LCM_PRESET as ARC2FACE
    from ..pipelines.pipeline_instantid import LCM_PRESET as INSTANTID

    s = hub.settings
    numbers = (f"{ARC2FACE['num_inference_steps']} steps at guidance {ARC2FACE['guidance_scale']:g} (Arc2Face), "
               f"{INSTANTID['num_inference_steps']} at {INSTANTID['guidance_scale']:g} (InstantID)")
    offered = [("Arc2Face", "arc2face", s.lcm_lora)] + ([("InstantID", "instantid", s.lcm_lora_sdxl)]
                                                          if hub.instantid_available else [])
    runs = set(fast_preset_styles(hub))
    loras = [f"`{lora}` into {name}" for name, style, lora in offered if lora and style in runs]
    missing = [name for name, style, lora in offered if not lora]
    text = f"Fast preset: {numbers}"
    if loras:
        text += f", with the LCM-LoRA {' and '.join(loras)} and the LCM scheduler"
    if missing:
        text += (f". No LCM-LoRA for {' and '.join(missing)}"
                 + (" (none fits tiny random weights; name a folder with --lcm-lora / --lcm-lora-sdxl)" if s.tiny else "")
                 + ": there the preset only sets those steps and guidance")
    text += "."
    for name, style, _ in offered:
        if style not in runs:
            text += f" Not available for {name} here: {s.fast_preset_unavailable(style)}."
    return text


def check_fast_preset(hub: ModelHub, style: str) -> None:
    """A ConfigError saying what to download when the fast preset cannot run for ``style`` here."""
    problem = hub.settings.fast_preset_unavailable(style)
    if problem:
        raise ConfigError(problem)


def pipeline_with_preset(hub: ModelHub, style: str, fast: bool):
    """The ``style`` pipeline, with its LCM-LoRA and ``LCMScheduler`` loaded exactly when ``fast``
    asks for them, and the call settings the preset imposes (``{}`` when not fast).

    Without a configured LCM-LoRA (tiny mode by default) only the preset's steps and guidance apply.
    A preset that cannot run here (:meth:`ModelSettings.fast_preset_unavailable`: its LoRA not
    downloaded; InfiniteYou, which has none) is refused before any model loads."""
    if style not in STYLES:
        raise ConfigError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    if fast:
        check_fast_preset(hub, style)
    if style == "infiniteyou":
        return hub.infiniteyou(), {}
    pipe = hub.arc2face() if style == "arc2face" else hub.instantid()
    lora = hub.settings.lcm_lora if style == "arc2face" else hub.settings.lcm_lora_sdxl
    if lora and fast != getattr(pipe, "_demo_lcm_lora", False):
        pipe.enable_lcm_lora(lora) if fast else pipe.disable_lcm_lora()
        pipe._demo_lcm_lora = fast
    return pipe, (dict(pipe.lcm_preset) if fast else {})


def generate_images(hub: ModelHub, identity: IdentityInput, *, style: str = "arc2face", count: int = 1,
                    seed: int = 0, steps: Optional[int] = None, guidance: Optional[float] = None, fast: bool = False,
                    prompt: str = "", negative_prompt: str = "", pose_photo=None,
                    progress: Progress = _no_progress) -> list[tuple[Image.Image, Optional[float]]]:
    """``count`` images of ``identity`` (made for ``style``: its vector is in that model's embedding space),
    each with its identity similarity to the input.

    Image ``k`` uses the generator seeded ``seed + k``, so it does not change with ``count``.
    ``steps`` / ``guidance`` default to the pipeline's own; ``fast`` replaces them by the LCM-LoRA
    preset's (:func:`pipeline_with_preset`). InstantID takes the face's pose from ``pose_photo``,
    else from the (first) identity photo; InfiniteYou from ``pose_photo``, else it has no pose (the
    prompt decides it), so it also draws random identities. InfiniteYou has no negative prompt
    (FLUX.1-dev's guidance is embedded, not classifier-free).
    """
    count, seed = check_range("count", count, Range(1)), check_range("seed", seed, SEED)
    if identity.style != style:
        raise ConfigError(f"the identity was embedded by the {identity.style} model's recogniser, whose vectors "
                          f"mean nothing to {style}: make it with style={style!r}")
    if style == "instantid" and not identity.faces:
        raise ConfigError("InstantID needs a face photo (it uses the face's keypoints); upload one")
    if style == "infiniteyou" and negative_prompt:
        raise ConfigError("InfiniteYou takes no negative prompt (FLUX.1-dev's guidance is embedded); leave it empty")
    progress(0.0, desc=f"loading {style}")
    with hub.exclusive(style):
        pipe, preset = pipeline_with_preset(hub, style, fast)
        settings = {"num_inference_steps": None if steps is None else int(steps),
                    "guidance_scale": None if guidance is None else float(guidance)}
        settings = {k: v for k, v in {**settings, **preset}.items() if v is not None}
        common = dict(num_images_per_prompt=count, callback_on_step_end=_step_callback(progress, count),
                      generator=[torch.Generator().manual_seed(int(seed) + k) for k in range(count)], **settings)
        if style == "arc2face":
            images = pipe(id_embeds=identity.vector[None], **common).images
        elif style == "infiniteyou":   # it normalises the identity itself: the unit vector goes in as it is
            images = pipe(prompt or "a portrait photo", id_embeds=identity.vector[None], pose_image=pose_photo,
                          **common).images
        else:
            # InstantID was trained on the raw (un-normalised) recogniser embedding: average the photos' raw ones.
            raw = torch.from_numpy(np.stack([f.embedding for f in identity.faces]).astype(np.float32)).mean(0, keepdim=True)
            images = pipe(prompt or "a portrait photo", negative_prompt=negative_prompt or None, id_embeds=raw,
                          pose_image=pose_photo if pose_photo is not None else identity.photos[0], **common).images
    progress(1.0, desc="measuring identity similarity")
    return [(image, similarity_to(hub, image, identity.vector, style)) for image in images]


def mix_identities(hub: ModelHub, photo_a, photo_b, t: float, *, seed: int = 0, steps: Optional[int] = None,
                   guidance: Optional[float] = None, fast: bool = False, progress: Progress = _no_progress):
    """An image of the identity a fraction ``t`` of the way (on the sphere) from A to B.

    Returns the image and its similarity to A and to B (``None`` where no face is found)."""
    a, b = identity_from_photos(hub, [photo_a]), identity_from_photos(hub, [photo_b])
    mixed = IdentityInput(slerp(a.vector, b.vector, float(t)), source=f"{t:.2f} from A to B")
    [(image, _)] = generate_images(hub, mixed, seed=seed, steps=steps, guidance=guidance, fast=fast,
                                   progress=progress)
    return image, similarity_to(hub, image, a.vector), similarity_to(hub, image, b.vector)


def save_images(images: Sequence[Image.Image], folder: Path, prefix: str = "image") -> list[Path]:
    """Write PNGs atomically; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{prefix}_{index:03d}.png"
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        paths.append(path)
    return paths


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip every file under ``folder`` (paths relative to it) into ``target``, atomically."""
    with atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                archive.write(path, path.relative_to(folder))
    return target


#: Images per generator call in the Dataset tab's job, and per pipeline call (so none is padding).
_DATASET_BATCH = 4


def make_dataset(hub: ModelHub, workdir: Path, *, identities: int = 4, images_per_identity: int = 2, seed: int = 0,
                 steps: int = 25, guidance: float = 3.0, progress: Progress = _no_progress,
                 cancel: Optional[CancelToken] = None) -> dict:
    """A small synthetic dataset with :func:`idgen.synth.generate_dataset` and the demo's models.

    In tiny mode the consistency filter is off (random models make no faces to check); with the
    embedded mini model its threshold is that model's calibrated one
    (:data:`idgen.synth.config.GENERATOR_DEFAULTS`), not the 0.5 of full-size models. Returns the
    statistics, the dataset folder (``workdir/dataset``), its similarity plot, a few sample images and
    the zip path (``workdir/dataset.zip``). The dataset is made in a hidden staging folder and renamed
    to ``workdir/dataset`` when finished, the zip written after that; cancelled through ``cancel`` (or
    failing), the job deletes the staging folder.
    """
    from ..synth import Arc2FaceGenerator

    seed = check_range("seed", seed, SEED)
    report = checked(progress, cancel)
    report(0.0, desc="loading models")
    images, steps = int(identities) * int(images_per_identity), int(steps)
    work = WorkProgress(report, images * steps, start=0.1, end=0.9, describe=lambda done: (
        f"generating {identities}×{images_per_identity} images ({steps} steps each): {done // steps} of {images} done"))

    def on_step_end(pipe, step, timestep, callback_kwargs):
        work.advance(len(callback_kwargs["latents"]))   # one step of each image in the batch
        return callback_kwargs

    generator = Arc2FaceGenerator(hub.arc2face(), num_inference_steps=steps, guidance_scale=float(guidance),
                                  callback_on_step_end=on_step_end, micro_batch=_DATASET_BATCH)
    with atomic_folder(Path(workdir) / "dataset") as staging:
        stats = _dataset_into(staging, hub, generator, identities, images_per_identity, seed, report, cancel)
        report(0.9, desc="publishing")   # the last checkpoint: from here on the job runs to its end
    out = Path(workdir) / "dataset"
    progress(0.9, desc="zipping")
    samples = sorted((out / "images").rglob("*.jpg"))[:8]
    return {"stats": stats, "folder": out, "plot": out / "plots" / "similarity.png", "samples": samples,
            "zip": zip_folder(out, Path(workdir) / "dataset.zip")}


def _dataset_into(out: Path, hub: ModelHub, generator, identities: int, images_per_identity: int, seed: int,
                  report: Progress, cancel: Optional[CancelToken]) -> dict:
    from ..synth import SynthConfig, generate_dataset

    # the generator object is passed in; the config still names its type, so the dataset records
    # which model made it and the filter gets that model's threshold (the mini model has its own)
    kind = "mini" if hub.settings.arc2face_source() == "mini" else "arc2face"
    config = SynthConfig.from_dict({
        "output_dir": str(out), "seed": int(seed),
        "generator": {"type": kind, "micro_batch": generator.micro_batch,
                      **{k: generator.call_kwargs[k] for k in ("num_inference_steps", "guidance_scale")}},
        "identities": {"count": int(identities), "dim": identity_dim(hub), "steps": 50},
        "variation": {"images_per_identity": int(images_per_identity)},
        "filter": {"enabled": not hub.settings.tiny, "detector": hub.settings.detector if not hub.settings.tiny else "dlib",
                   "recognizer": hub.settings.recognizer if not hub.settings.tiny else "dlib"},
        "writers": {"formats": ["imagefolder"]},
        "runtime": {"progress": False, "batch_size": _DATASET_BATCH, "device": "cpu" if hub.settings.tiny else None},
    }, "demo dataset")
    report(0.1, desc=f"generating {identities}×{images_per_identity} images")
    with hub.exclusive("arc2face"), checkpoints(cancel):
        return generate_dataset(config, generator=generator, analyzer=hub.analyzer())


def forget_in_recognizer(hub: ModelHub, faces: FaceFolder, workdir: Path, recognizers: FolderLRU, *,
                         identities: Sequence[str] = (), count: int = 1, base_epochs: int = 20, epochs: int = 5,
                         progress: Progress = _no_progress, cancel: Optional[CancelToken] = None) -> dict:
    """Forget identities in a small face recogniser with GS-LoRA (:func:`idgen.unlearn.run_forgetting`).

    ``faces`` holds one folder of face crops per person (an uploaded zip, the Dataset tab's
    ``images/`` folder, ORL; :mod:`.face_folders`). The recogniser (the ``cpu-tiny`` Face Transformer)
    is trained on it first and kept in ``recognizers`` under the folder's content
    (:func:`face_folder_key`) and ``base_epochs``: a later run on the same photos reuses it, one on
    other photos (people swapped, added, photos changed) trains its own, and the old one stays for
    the old photos. ``identities`` names the people to forget; when empty, ``count`` of them are
    drawn. Returns the report (before/after accuracies per method), the Markdown report, the
    group-norm plot and the run's folder (``workdir/forgetting``: the edited model, ``report.json``,
    ``report.md``, ``groups.png``).

    The run is made in a hidden staging folder renamed to ``workdir/forgetting`` when finished;
    cancelled through ``cancel`` (or failing), the job deletes it. The cached recogniser is written
    only once trained (its weights file last), so a cancelled training leaves none, and one
    finished before the cancel is kept for the next run.
    """
    from ..recognition.data import list_identities
    from ..unlearn import run_forgetting

    base_epochs, epochs = check_range("recogniser training epochs", base_epochs, Range(1)), check_range("epochs", epochs, Range(1))
    people = list_identities(faces.path, 1, faces.label)
    names = [name.strip() for name in identities if name.strip()]
    unknown = [name for name in names if name not in people]
    if unknown:
        listed = ", ".join(list(people)[:10]) + (" …" if len(people) > 10 else "")
        raise ConfigError(f"people to forget: {unknown} are not among the {len(people)} people of {faces.label} "
                          f"({listed})")
    if names:
        tasks = {"identities": [names]}
    else:
        tasks = {"num_tasks": 1, "classes_per_task": check_range("how many to draw", count, Range(1, len(people) - 1))}
    run = Path(workdir) / "forgetting"
    with recognizers.use(f"recognizer-{face_folder_key(people)[:24]}-{base_epochs}") as cached:
        config = {
            "data": {"root": str(faces.path), "align": "resize", "resolution": 32, "test_fraction": 0.3,
                     "cache_dir": str(cached / "faces")},
            "model": {"path": str(cached / "model"), "preset": "cpu-tiny",
                      "train": {"epochs": base_epochs, "batch_size": 32, "learning_rate": 1e-3}},
            "method": "gs-lora", "tasks": tasks,
            "forget": {"epochs": epochs, "warmup_epochs": min(2, epochs - 1), "learning_rate": 1e-2,
                       "lora": {"rank": 2, "grouping": "block"}},
            "baselines": {"methods": []},
        }
        plan = forgetting_plan(people, base_epochs, epochs, trained=(cached / "model" / "model.safetensors").is_file())
        with atomic_folder(run) as staging:
            checked(progress, cancel)(0.05, desc=plan)
            with checkpoints(cancel):
                report = run_forgetting({**config, "output_dir": str(staging)})
            checked(progress, cancel)(0.95, desc="publishing")   # the last checkpoint
    progress(1.0, desc="done")
    return {"report": report, "markdown": (run / "report.md").read_text(), "plot": run / "groups.png",
            "folder": run}


def forgetting_plan(people: dict[str, list[Path]], base_epochs: int, epochs: int, trained: bool) -> str:
    """What a Forget → Recogniser run is about to do, said before it starts: whether it trains the
    recogniser (the long part) or reuses the one trained on these photos, and how many epochs each
    part runs (the page's bars then count them)."""
    photos = sum(len(files) for files in people.values())
    forgetting = f"then forgetting: {epochs} epochs"
    if trained:
        return f"reusing the recogniser already trained on these {photos} photos; {forgetting}"
    return (f"training the recogniser on {photos} photos of {len(people)} people for {base_epochs} epochs "
            f"(the long part; later runs on these photos reuse it), {forgetting}")


def face_folder_key(people: dict[str, list[Path]]) -> str:
    """SHA-256 of a face folder's content (``people``: :func:`idgen.recognition.data.list_identities`):
    each person's name, and each photo's name, size and SHA-256, in order. Any change of people or
    photos changes it; moving or renaming the folder does not."""
    digest = hashlib.sha256()
    for person, files in people.items():
        for file in files:
            data = Path(file).read_bytes()
            digest.update(json.dumps([person, Path(file).name, len(data), hashlib.sha256(data).hexdigest()]).encode())
    return digest.hexdigest()


def _with_own_text_encoder(pipe):
    """A pipeline sharing every component of ``pipe`` but a private copy of its text encoder, the only
    part that generator forgetting edits: the edit never leaks into the other tabs."""
    import copy

    return type(pipe)(**{**pipe.components, "text_encoder": copy.deepcopy(pipe.text_encoder)},
                      requires_safety_checker=pipe.config.get("requires_safety_checker", False))


def _metrics_table(metrics: dict) -> str:
    """Markdown table of the forgetting metrics; the "before" column follows from their definition
    (``*_to_neutral`` is 1 and ``*_change*`` is 0 for the unedited encoder)."""
    def before(name):
        return "1" if name.endswith("_to_neutral") else "0" if "change" in name else ""

    rows = "\n".join(f"| `{name}` | {before(name)} | {value:.3f} |" for name, value in metrics.items())
    return ("| conditioning metric | before | after |\n|---|---|---|\n" + rows + "\n\n"
            "`*_to_neutral`: distance to the neutral identity's conditioning relative to the original "
            "(1 untouched, 0 forgotten); `*_change`: how far the conditioning moved (0 untouched). "
            "`forgotten` are the people chosen, `nearby` unseen vectors around them, `random` other people.")


def forget_in_generator(hub: ModelHub, workdir: Path, photos: Sequence = (), *, seed: int = 0, steps: int = 300,
                        radius: float = 0.5, render_steps: Optional[int] = None, progress: Progress = _no_progress,
                        cancel: Optional[CancelToken] = None) -> dict:
    """Make a copy of the Arc2Face generator forget the person in ``photos`` (or a random identity
    drawn from ``seed``) with :func:`idgen.unlearn.generator.forget_identities`, and show the effect.

    The hub's pipeline is left as it was (the edit goes into a private copy of its text encoder).
    Returns the forgetting result (its ``metrics`` compare the conditioning before and after), a
    Markdown table of them, one render of the person before and one after (same seed) with their
    identity similarity to the person, and a zip of the LoRA folder (``load_lora_weights`` reads it).

    The LoRA is saved into a hidden staging folder renamed to ``workdir/lora`` once the renders are
    done; cancelled through ``cancel`` (or failing), the job deletes it.
    """
    from ..unlearn.generator import forget_identities as forget_in_encoder

    seed = check_range("seed", seed, SEED)
    identity = identity_from_photos(hub, photos) if photos else random_identity(hub, seed)
    report = checked(progress, cancel)
    report(0.0, desc="loading Arc2Face")
    run = Path(workdir)
    images = {}
    with atomic_folder(run / "lora") as staging:
        # the copy shares the UNet, VAE and scheduler with the hub's pipeline
        with hub.exclusive("arc2face"), checkpoints(cancel):
            original, _ = pipeline_with_preset(hub, "arc2face", fast=False)
            edited = _with_own_text_encoder(original)
            report(0.1, desc=f"forgetting {identity.source}: {int(steps)} steps")
            result = forget_in_encoder(edited, identity.vector[None], radius=float(radius), steps=int(steps),
                                       save_dir=staging)  # its tqdm bar shows in the page (track_tqdm)
            for name, pipe in (("before", original), ("after", edited)):
                report(0.8 if name == "before" else 0.9, desc=f"rendering the person {name} forgetting")
                settings = {} if render_steps is None else {"num_inference_steps": int(render_steps)}
                images[name] = pipe(id_embeds=identity.vector[None],
                                    generator=torch.Generator().manual_seed(int(seed)), **settings).images[0]
        report(0.95, desc="publishing")   # the last checkpoint
    renders = [(name, image, similarity_to(hub, image, identity.vector)) for name, image in images.items()]
    progress(1.0, desc="done")
    return {"result": result, "identity": identity, "renders": renders, "markdown": _metrics_table(result.metrics),
            "folder": run / "lora", "zip": zip_folder(run / "lora", run / "forget_lora.zip")}
