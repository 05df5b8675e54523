"""``generate_dataset(config)``: the one call that makes (or resumes) a synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError, IdgenError
from ..io import atomic_folder, check_output_folder, output_errors, remove_temporaries, write_json_atomic
from .card import inter_identity_cosines, write_card, write_unfinished_card
from .config import SynthConfig
from .consistency import ConsistencyFilter, KeepAll
from .engine import DatasetEngine
from .generators import build_generator
from .journal import Journal
from .writers import FORMATS, SHARD_NAMES, write_manifest, write_parquet, write_webdataset

#: How to carry on after a write failed mid-run.
RESUME = "run the same command again to resume"


def _coerce(config) -> SynthConfig:
    if isinstance(config, SynthConfig):
        return config
    if isinstance(config, dict):
        return SynthConfig.from_dict(config)
    return SynthConfig.load(config)


def build_filter(config: SynthConfig, analyzer=None):
    """The consistency filter ``config.filter`` describes, around ``analyzer`` when given.

    For ``generator.type: mini`` the analyser sees each render as the mini model's own face analysis
    does (:data:`~idgen.pipelines.mini.MINI_FACE_BACKENDS`): its 64×64 renders are too small for
    dlib's detector unless upscaled, and its identity vectors are flip-summed embeddings. For a
    published generator (``arc2face``, ``instantid``, ``infiniteyou``) whose renders are compared with
    their identity vectors, a ``filter.recognizer`` other than the one the model was trained on
    (:data:`~idgen.faces.published.FACE_BACKENDS`) gets a warning naming that one.
    """
    settings = config.filter
    if not settings.enabled:
        return KeepAll()
    if analyzer is None:
        from ..faces import FaceAnalyzer
        from ..faces.published import FACE_BACKENDS, warn_if_foreign

        analyzer = FaceAnalyzer.from_backend(settings.detector, settings.recognizer, det_size=settings.det_size,
                                             fallback_box=settings.fallback_box, **_analysis_options(config))
        size = getattr(analyzer.recognizer, "embedding_size", None)
        if settings.reference == "target" or (settings.reference == "auto" and size == config.identities.dim):
            kind = config.generator.get("type")
            warn_if_foreign(analyzer, FACE_BACKENDS.get(kind), f"generator type {kind!r}", "filter.recognizer")
    return ConsistencyFilter(analyzer, settings.threshold, settings.reference, settings.duplicate_cosine,
                             settings.max_abs_yaw)


def _analysis_options(config: SynthConfig) -> dict:
    """The analyser options the generator's renders need: none, or for ``generator.type: mini`` its
    own analysis, after checking the filter embeds in the space the model is conditioned on."""
    if config.generator.get("type") != "mini":
        return {}
    from ..pipelines.mini import MINI_FACE_BACKENDS

    settings, recognizer = config.filter, MINI_FACE_BACKENDS["recognizer"]
    if settings.reference != "centroid" and str(settings.recognizer).split(":")[0] != recognizer:
        raise ConfigError(
            f"generator type 'mini' is conditioned on {recognizer} embeddings, but filter.recognizer is "
            f"{settings.recognizer!r}: its embeddings would be compared with those identity vectors; set "
            f"filter.recognizer: {recognizer} (or filter.reference: centroid to compare renders with each other)")
    return {key: MINI_FACE_BACKENDS[key] for key in ("min_side", "flip")}


def _saved_settings(out: Path) -> dict | None:
    """The ``config.json`` a dataset run wrote first into ``out``, or None if there is none."""
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and "fingerprint" in saved else None


def _check_output_folder(config: SynthConfig, out: Path, is_main: bool) -> None:
    """A folder holds one dataset: it is resumed only when its ``config.json`` records the same
    settings; any other non-empty folder is refused, as are a read-only one or a full disk
    (:func:`~idgen.io.check_output_folder`). The main process then clears what killed writes left,
    records the settings of a new dataset and marks it unfinished (its README.md) until assembled."""
    unknown = sorted(set(config.writers.formats) - set(FORMATS))
    if unknown:
        raise ConfigError(f"unknown output format(s) {unknown}; choose from {list(FORMATS)}")
    resuming = check_output_folder(out, "output_dir", lambda folder: _saved_settings(folder) is not None)
    if resuming and _saved_settings(out)["fingerprint"] != config.fingerprint():
        raise ConfigError(f"{out} holds a dataset made with other settings (see {out / 'config.json'}); "
                          "use a new output folder or restore those settings")
    if not is_main:
        return
    with output_errors():
        out.mkdir(parents=True, exist_ok=True)
        if resuming:
            remove_temporaries(out)
        else:
            settings = {k: v for k, v in config.to_dict().items() if k != "output_dir"}
            # keys sorted all the way down: the same settings written in any order give the same bytes
            write_json_atomic(out / "config.json", {"fingerprint": config.fingerprint(),
                                                    "config": json.loads(json.dumps(settings, sort_keys=True))})
        if not (out / "README.md").exists():   # the real card comes last, when the dataset is whole
            write_unfinished_card(out)


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def generate_dataset(config, *, generator=None, analyzer=None) -> dict | None:
    """Make the dataset described by ``config`` (a :class:`SynthConfig`, a dict, or a YAML path).

    Runs as one process of ``accelerate launch`` (or alone). ``generator`` and ``analyzer``
    override the ones the config names (any object following :class:`ImageGenerator`, any
    :class:`idgen.faces.FaceAnalyzer`). Returns the dataset statistics on process 0, else None.

    ``config.output_dir`` must be new, empty, or this dataset's own folder (resumed); anything else, a
    read-only folder or a full disk is refused before any work. A write failing mid-run (a full
    disk) raises an :class:`~idgen.errors.OutputError` naming the path; the same call resumes.
    """
    from accelerate import PartialState

    config = _coerce(config)
    state = PartialState(cpu=config.runtime.device == "cpu" or not _has_accelerator())
    out = Path(config.output_dir)
    _check_output_folder(config, out, state.is_main_process)
    state.wait_for_everyone()
    device = config.runtime.device or state.device
    engine = DatasetEngine(config, generator or build_generator(config.generator, device, config.identities.dim),
                           build_filter(config, analyzer), state.process_index, state.num_processes)
    with output_errors(RESUME):
        identity_stats = engine.sample_or_load_identities(state)
        engine.load_pose_bank(state)
        engine.load_expression_bank(state)
        journal = Journal(out / "journal", state.process_index, state.num_processes)
        finished = set(journal.entries())
        journal.open()
        try:
            engine.run_shard(journal, finished)
        finally:
            journal.close()
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        return assemble(config, engine.targets.numpy(), identity_stats)


def assemble(config: SynthConfig, targets: np.ndarray, identity_stats: dict) -> dict:
    """Write the manifest, shards, card and statistics from the journal, deterministically."""
    out = Path(config.output_dir)
    entries = Journal(out / "journal").entries()
    missing = [i for i in range(config.identities.count) if i not in entries]
    if missing:
        raise IdgenError(f"{len(missing)} identities of {out} are not finished (first: {missing[0]}); "
                         "run the same command again to resume")
    entries = [entries[i] for i in range(config.identities.count)]
    records = [dict(record, generator=config.generator) for entry in entries for record in entry["images"]]
    absent = [r["file"] for r in records if not (out / r["file"]).is_file()]
    if absent:
        raise IdgenError(f"{len(absent)} images listed in {out}/journal are missing (first: {absent[0]}); "
                         "delete their identities' journal lines and rerun")

    def read(record):
        return (out / record["file"]).read_bytes()

    write_manifest(records, out / "manifest.jsonl")
    for kind, folder, write in (("parquet", "data", write_parquet), ("webdataset", "webdataset", write_webdataset)):
        if kind in config.writers.formats:   # whole or not at all: the shards appear together, replacing older ones
            with atomic_folder(out / folder, replaces=SHARD_NAMES[kind]) as staging:
                write(records, read, staging, config.writers.shard_size)

    counts = {key: sum(e["counts"][key] for e in entries) for key in entries[0]["counts"]}
    stats = {
        "images": len(records),
        "identities_with_images": sum(bool(e["images"]) for e in entries),
        "counts": counts,
        "acceptance_rate": round(counts["kept"] / max(counts["generated"], 1), 6),
        "identities": identity_stats,
    }
    centroids = np.array([e["centroid"] for e in entries if e["centroid"] is not None])
    intra = [r["similarity"] for r in records if r["similarity"] is not None]
    write_card(out, config, stats, intra, inter_identity_cosines(targets, seed=config.seed),
               inter_identity_cosines(centroids, seed=config.seed) if len(centroids) > 1 else np.array([]))
    write_json_atomic(out / "stats.json", stats)
    return stats
