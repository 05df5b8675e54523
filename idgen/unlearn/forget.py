"""The forgetting loop (GS-LoRA / GS-LoRA++), its baselines, and a whole continual run.

:func:`gs_lora_task` edits a recogniser for one forgetting task; :func:`run_forgetting` builds or
loads the base recogniser, runs every task of the configured sequence with GS-LoRA and with each
baseline in the same harness, and returns (and writes) the report. ``idgen forget`` is a thin
wrapper around :func:`run_forgetting`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io import check_output_folder, output_errors, remove_temporaries
from ..recognition.data import FaceSet, load_face_folder, to_model_input
from ..recognition.distill import prepare_distillation
from ..models import FaceRecognizer, model_config
from ..recognition.trainer import FaceTransformerRecipe, embed, fit, predict
from .config import ForgetConfig, RunConfig
from .journal import RunJournal, fingerprint
from .lora import add_task_lora, lora_groups, merge_task_lora
from .losses import (class_prototypes, forgetting_loss, group_lasso, group_soft_threshold, prototype_logits,
                     prototype_loss)
from .metrics import accuracy, task_metrics


def _cycle_batches(data: FaceSet, batch_size: int, generator: torch.Generator):
    while True:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, max(1, len(order) - batch_size + 1), batch_size):  # whole batches only
            index = order[start: start + batch_size]
            yield data.images[index], data.labels[index]


def _forgetting_epochs(model, params, forget: FaceSet, retain: FaceSet, config: ForgetConfig, learning_rate: float,
                       groups=None, prototypes=None, desc: str = "forgetting", seed: int = 0) -> list[dict]:
    """Optimise L_remain + β·L_forget (+ α·L_structure after warm-up) (+ γ·L_prototype). With
    ``config.proximal`` the structure term is not differentiated but applied after every optimiser
    step as the group soft-threshold with threshold learning_rate·α (proximal gradient)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    retain_batches = _cycle_batches(retain, config.batch_size, generator)
    forget_batches = _cycle_batches(forget, config.forget_batch_size, generator)
    steps = max(1, -(-len(retain) // config.batch_size))
    # prototype logits have the head's scale, so by default the head's bound carries over
    prototype_bound = config.bound if config.prototype_bound is None else config.prototype_bound
    model.train()
    log = []
    for epoch in tqdm(range(config.epochs), desc=desc, leave=False):
        alpha = config.alpha if (groups and epoch >= config.warmup_epochs) else 0.0
        totals = {"remain": 0.0, "forget": 0.0, "structure": 0.0, "prototype": 0.0}
        for _ in range(steps):
            r_img, r_lab = next(retain_batches)
            f_img, f_lab = next(forget_batches)
            images = to_model_input(torch.cat([r_img, f_img]), config.augment)
            labels = torch.cat([r_lab, f_lab])
            embeddings = model.embed(images)
            logits = model.head(embeddings, labels)
            n = len(r_lab)
            remain = F.cross_entropy(logits[:n], r_lab)
            forget_term = forgetting_loss(logits[n:], f_lab, config.bound)
            loss = remain + config.beta * forget_term
            if alpha:
                structure = group_lasso([g.parameters for g in groups])
                if not config.proximal:
                    loss = loss + alpha * structure
                totals["structure"] += structure.item()
            if prototypes is not None:
                proto = prototype_loss(embeddings[:n], r_lab, embeddings[n:], f_lab, *prototypes,
                                       scale=model.config.scale, bound=prototype_bound)
                loss = loss + config.prototype_weight * proto
                totals["prototype"] += proto.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if alpha and config.proximal:
                group_soft_threshold([g.parameters for g in groups], learning_rate * alpha)
            totals["remain"] += remain.item()
            totals["forget"] += forget_term.item()
        log.append({"epoch": epoch, **{k: v / steps for k, v in totals.items()}})
    model.eval()
    return log


def gs_lora_task(model: FaceRecognizer, forget: FaceSet, retain: FaceSet, config: ForgetConfig,
                 task_index: int = 0, seed: int = 0) -> tuple[FaceRecognizer, dict]:
    """One GS-LoRA(++) task: add a LoRA set to the FFN linears, train it, merge it. Returns the edited
    model and the task's statistics (trainable share, group norms)."""
    total_params = model.num_parameters()
    prototypes = None
    if config.prototype_weight > 0:
        both = FaceSet(torch.cat([retain.images, forget.images]), torch.cat([retain.labels, forget.labels]),
                       retain.class_names)
        prototypes = class_prototypes(embed(model, both), both.labels, model.config.num_classes)
    adapter = f"task{task_index}"
    peft_model, blocks = add_task_lora(model, adapter, config.lora.rank, config.lora.alpha,
                                       config.lora.target_pattern, config.lora.target_parameters)
    groups = lora_groups(model, blocks, adapter, config.lora.grouping, config.lora.target_parameters)
    params = [p for g in groups for p in g.parameters]
    trainable = sum(p.numel() for p in params)
    log = _forgetting_epochs(model, params, forget, retain, config, config.learning_rate, groups, prototypes,
                             desc=f"GS-LoRA task {task_index + 1}", seed=seed)
    norms = {g.name: g.norm() for g in groups}
    model = merge_task_lora(peft_model)
    model.requires_grad_(True)  # peft froze the base weights; hand back a plain, trainable model
    return model, {"trainable_params": trainable, "total_params": total_params,
                   "trainable_share": 100.0 * trainable / total_params, "group_norms": norms,
                   "nonzero_groups": sum(v > config.lora.zero_tol for v in norms.values()),
                   "num_groups": len(norms), "log": log}


def finetune_task(model: FaceRecognizer, forget: FaceSet, retain: FaceSet, config: ForgetConfig, learning_rate: float,
                  task_index: int = 0, seed: int = 0) -> tuple[FaceRecognizer, dict]:
    """Baseline: every parameter trainable, the same remain + forget losses, no structure loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    log = _forgetting_epochs(model, params, forget, retain, config, learning_rate, desc=f"fine-tune task {task_index + 1}",
                             seed=seed)
    n = sum(p.numel() for p in params)
    return model, {"trainable_params": n, "total_params": model.num_parameters(), "trainable_share": 100.0 * n
                   / model.num_parameters(), "log": log}


def retrain_task(model: FaceRecognizer, retain: FaceSet, train_config: FaceTransformerRecipe, epochs: int,
                 seed: int = 0, extra: FaceSet | None = None) -> tuple[FaceRecognizer, dict]:
    """Baseline: a fresh recogniser of the same size trained on the retained data only, with the base
    model's recipe (distillation included, when the base was distilled)."""
    torch.manual_seed(seed)
    fresh = FaceRecognizer(model.config)
    config = dataclasses.replace(train_config, epochs=epochs, seed=seed,
                                 warmup_epochs=min(train_config.warmup_epochs, max(0, epochs - 1)))
    log = fit(fresh, retain, config, progress=False, extra=extra)
    n = fresh.num_parameters()
    return fresh, {"trainable_params": n, "total_params": n, "trainable_share": 100.0, "log": log["losses"]}


@torch.no_grad()
def gallery_predictions(model: FaceRecognizer, gallery: FaceSet, queries: FaceSet) -> torch.Tensor:
    """Each query photo's identity as a deployed recogniser finds it: the nearest (cosine) class
    mean of the gallery photos' embeddings, everything embedded by ``model``. People are enrolled
    again after the edit, so someone the classifier head no longer names, but whose photos still
    cluster together, is found here."""
    prototypes, present = class_prototypes(embed(model, gallery), gallery.labels, model.config.num_classes)
    return prototype_logits(embed(model, queries), prototypes, present, scale=1.0).argmax(1)


# ---------------------------------------------------------------------- the whole run
#: Baselines run in the same harness: a fresh model trained on the retained data; every weight
#: fine-tuned with GS-LoRA's losses; and no training at all, the forgotten classes only dropped from
#: the classifier head's arg-max (what the head metrics alone cannot tell from forgetting).
BASELINES = ("retrain", "finetune", "drop-classes")
#: Methods that draw nothing at random: they run once, whatever ``repeats`` says.
SEED_FREE = ("drop-classes",)


def resolve_tasks(config: RunConfig, class_names: list[str]) -> list[list[int]]:
    tasks = config.tasks
    if tasks.identities is not None:
        index = {name: i for i, name in enumerate(class_names)}
        resolved = []
        for task in tasks.identities:
            unknown = [name for name in task if name not in index]
            if unknown:
                raise ConfigError(f"tasks.identities: {unknown} are not identity folders of {config.data.root}")
            resolved.append([index[name] for name in task])
        return resolved
    needed = tasks.num_tasks * tasks.classes_per_task
    if needed >= len(class_names):
        raise ConfigError(f"tasks ask to forget {needed} of only {len(class_names)} identities")
    drawn = random.Random(tasks.seed).sample(range(len(class_names)), needed)
    return [sorted(drawn[i * tasks.classes_per_task:(i + 1) * tasks.classes_per_task])
            for i in range(tasks.num_tasks)]


def load_or_train_base(config: RunConfig, train: FaceSet, test: FaceSet,
                       extra: FaceSet | None = None) -> tuple[FaceRecognizer, dict]:
    """The base recogniser in ``model.path``, or one trained on ``train`` and saved there with the
    :meth:`~idgen.recognition.data.FaceSet.digest` of ``train`` (``training_data`` in its
    ``config.json``). A saved one is used only for the photos it was made for: it must classify the
    same people in the same order, and, when it records its training data, have been trained on
    exactly these photos; otherwise a ConfigError says what differs."""
    path = Path(config.model.path)
    if (path / "model.safetensors").is_file():
        model = FaceRecognizer.from_pretrained(path)
        _check_made_for(path, model.class_names, train, config.data.root)
        return model.eval(), {"trained": False}
    torch.manual_seed(config.seed)
    mc = model_config(config.model.preset, **{"resolution": config.data.resolution, **config.model.overrides,
                                             "num_classes": len(train.class_names)})
    model = FaceRecognizer(mc)
    log = fit(model, train, config.model.train, extra=extra)
    model.save_pretrained(path, train.class_names, training_data=train.digest())
    acc = accuracy(predict(model, test), test.labels, range(len(train.class_names)))
    return model, {"trained": True, "wall_seconds": log["wall_seconds"], "test_accuracy": acc}


def _check_made_for(path: Path, class_names: list[str] | None, train: FaceSet, root: str) -> None:
    """A ConfigError unless the recogniser in ``path`` was made for ``train``'s people (and photos)."""
    fix = f"point model.path at a new folder (or delete {path}) to train one for these photos"
    saved = class_names or []
    if saved != train.class_names:
        added = sorted(set(train.class_names) - set(saved))
        gone = sorted(set(saved) - set(train.class_names))
        differences = [f"{what}: {_some(names)}" for what, names in (("people not in it", added),
                                                                   ("people only in it", gone)) if names]
        raise ConfigError(f"{path} classifies {len(saved)} people, {root} has {len(train.class_names)} ("
                          + ("; ".join(differences) or "the same names in another order") + f"); {fix}")
    recorded = json.loads((path / "config.json").read_text()).get("training_data")
    if recorded is not None and recorded != train.digest():
        raise ConfigError(f"{path} was trained on other photos of these {len(saved)} people than {root} "
                          f"holds now; {fix}")


def _some(names: list[str], shown: int = 5) -> str:
    return str(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _available(train: FaceSet, classes, shots: int | None) -> FaceSet:
    data = train.of_classes(classes)
    return data.few_shot(shots) if shots else data


def _edit(method: str, model: FaceRecognizer, forget_data: FaceSet, retain_data: FaceSet, config: RunConfig,
          task_index: int, seed: int, extra: FaceSet | None) -> tuple[FaceRecognizer, dict]:
    """One forgetting task with ``method``: the edited model and the task's statistics."""
    if method in ("gs-lora", "gs-lora++"):
        forget_config = config.forget
        if method == "gs-lora":
            forget_config = dataclasses.replace(config.forget, prototype_weight=0.0)
        return gs_lora_task(model, forget_data, retain_data, forget_config, task_index, seed)
    if method == "finetune":
        bound = config.baselines.finetune_bound or config.forget.bound
        return finetune_task(model, forget_data, retain_data, dataclasses.replace(config.forget, bound=bound),
                             config.baselines.finetune_learning_rate or config.forget.learning_rate, task_index, seed)
    if method == "retrain":
        epochs = config.baselines.retrain_epochs or config.forget.epochs
        return retrain_task(model, retain_data, config.model.train, epochs, seed, extra)
    if method == "drop-classes":   # no training: predictions leave the forgotten classes out (run_method)
        return model, {"trainable_params": 0, "total_params": model.num_parameters(), "trainable_share": 0.0}
    raise ConfigError(f"unknown method {method!r}; use gs-lora, gs-lora++ or one of {list(BASELINES)}")


def _gallery_accuracy(predictions: torch.Tensor | None, labels: torch.Tensor, classes) -> float | None:
    return None if predictions is None else accuracy(predictions, labels, classes)


def run_method(method: str, base: FaceRecognizer, train: FaceSet, test: FaceSet, tasks: list[list[int]],
               config: RunConfig, base_predictions: torch.Tensor, extra: FaceSet | None = None,
               gallery_metrics: bool = True) -> list[dict]:
    """Run the task sequence with one method; metrics after every task. ``gallery_metrics=False``
    skips the gallery columns (None): they re-embed every training photo after each task, and
    hyper-parameter selection does not score them."""
    model = copy.deepcopy(base)
    all_classes = set(range(len(train.class_names)))
    missing_rng = random.Random(config.tasks.seed + 1)
    forgotten: list[int] = []
    results = []
    # what the model predicts before each task: the base's, then whatever the previous task left
    predictions = base_predictions
    gallery = gallery_predictions(model, train, test) if gallery_metrics else None
    for t, task in enumerate(tasks):
        retained = sorted(all_classes - set(forgotten) - set(task))
        n_missing = round(config.tasks.missing_fraction * len(retained))
        replay_classes = sorted(set(retained) - set(missing_rng.sample(retained, n_missing)))
        forget_data = _available(train, task, config.tasks.shots)
        retain_data = _available(train, replay_classes, config.tasks.shots)
        acc_f_before = accuracy(predictions, test.labels, task)
        gallery_acc_f_before = _gallery_accuracy(gallery, test.labels, task)
        seed = config.seed + t
        # every (method, task) starts from the same random state whatever ran before it (selection
        # candidates, other methods), so a configuration's result does not depend on the grid it
        # was chosen from: LoRA initialisation and augmentation draw from the global generator,
        # which is seeded here and handed back to the caller as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            start = time.perf_counter()
            model, stats = _edit(method, model, forget_data, retain_data, config, t, seed, extra)
            wall = time.perf_counter() - start
        # drop-classes: no training, every class forgotten so far is taken out of the head's arg-max
        predictions = predict(model, test, exclude=forgotten + task if method == "drop-classes" else ())
        metrics = task_metrics(
            predictions, test.labels, forget_now=task, forgotten_before=forgotten, retained=retained,
            acc_f_before=acc_f_before, base_acc_r=accuracy(base_predictions, test.labels, retained),
            base_acc_f_all=accuracy(base_predictions, test.labels, set(task) | set(forgotten)))
        gallery = gallery_predictions(model, train, test) if gallery_metrics else None
        metrics.update(gallery_acc_f_before=gallery_acc_f_before,
                       gallery_acc_f=_gallery_accuracy(gallery, test.labels, task),
                       gallery_acc_r=_gallery_accuracy(gallery, test.labels, retained))
        results.append({"task": t + 1, "forgotten": [train.class_names[c] for c in task], **metrics,
                        "wall_seconds": wall, "forget_images": len(forget_data), "retain_images": len(retain_data),
                        "missing_classes": len(retained) - len(replay_classes), **stats})
        forgotten += task
    results[-1]["model"] = model
    return results


AVERAGED = ("acc_f_before", "acc_f", "acc_r", "drop", "h_mean", "h_mean_ideal", "acc_previously_forgotten",
            "gallery_acc_f_before", "gallery_acc_f", "gallery_acc_r", "wall_seconds")


def _mean_and_spread(values: list) -> tuple:
    """Mean and sample standard deviation, computed exactly (``statistics`` works in fractions), so
    seeds that agree have a spread of exactly zero."""
    if values[0] is None:
        return None, None
    return statistics.mean(values), statistics.stdev(values)


def run_repeated(method: str, base: FaceRecognizer, train: FaceSet, test: FaceSet, tasks: list[list[int]],
                 config: RunConfig, base_predictions: torch.Tensor, extra: FaceSet | None = None,
                 journal: RunJournal | None = None, keep_model: bool = True,
                 gallery_metrics: bool = True) -> list[dict]:
    """:func:`run_method` once per training seed (``config.seed``, +1, … ``config.repeats`` of them).

    On a few hundred test photos one seed's numbers move by a point or two (LoRA initialisation,
    batch order, augmentation), as much as the gaps between methods; the mean says which method is
    ahead. Per task the metrics are the means over seeds, ``spread`` holds their standard deviations
    and ``runs`` every seed's own numbers. Trainable share, group norms, logs and the returned model
    are the first seed's; the model only with ``keep_model``. With a ``journal``, seeds that already
    finished are read from it and new ones written to it as they finish. A :data:`SEED_FREE` method
    runs once (its numbers have no spread)."""
    data = fingerprint(base, train, test, extra) if journal is not None else None   # hashed once, not per seed
    runs = []
    for k in range(1 if method in SEED_FREE else config.repeats):
        seed_config = dataclasses.replace(config, seed=config.seed + k)
        with_model = keep_model and k == 0
        name = journal.name(method, seed_config, data) if journal is not None else None
        results = journal.load(name, base, with_model) if name else None
        if results is None:
            results = run_method(method, base, train, test, tasks, seed_config, base_predictions, extra,
                                 gallery_metrics)
            if name:
                journal.save(name, results, with_model)
        if not with_model:
            results[-1].pop("model", None)
        runs.append(results)
    if len(runs) == 1:
        return runs[0]
    merged = []
    for t, first in enumerate(runs[0]):
        row, spread = dict(first), {}
        for key in AVERAGED:
            row[key], spread[key] = _mean_and_spread([run[t][key] for run in runs])
        row["cumulative"] = {}
        for key in first["cumulative"]:
            row["cumulative"][key], spread[f"cum_{key}"] = _mean_and_spread([run[t]["cumulative"][key] for run in runs])
        row["spread"] = spread
        row["runs"] = [{"seed": config.seed + k, **{key: run[t][key] for key in AVERAGED},
                        "cum_h_mean": run[t]["cumulative"]["h_mean"]} for k, run in enumerate(runs)]
        merged.append(row)
    return merged


def _with_choice(config: RunConfig, method: str, choice: dict) -> RunConfig:
    """``config`` with ``method``'s chosen ``learning_rate``, ``bound`` (and, for GS-LoRA, ``alpha``, for
    GS-LoRA++ also ``prototype_weight``) set; the fine-tune baseline has its own learning rate and BND and no
    groups to shrink."""
    if method == "finetune":
        return dataclasses.replace(config, baselines=dataclasses.replace(
            config.baselines, finetune_learning_rate=choice["learning_rate"], finetune_bound=choice["bound"]))
    return dataclasses.replace(config, forget=dataclasses.replace(config.forget, **choice))


def _candidates(config: RunConfig, method: str) -> list[dict]:
    """The selection grid of one method: learning_rate × BND (× α for GS-LoRA, × γ for GS-LoRA++); an empty
    list of bounds, alphas or prototype weights keeps the configured value."""
    selection, forget = config.selection, config.forget
    axes = {"learning_rate": selection.finetune_learning_rates if method == "finetune" else selection.gs_lora_learning_rates,
            "bound": selection.bounds or [forget.bound]}
    if method != "finetune":
        axes["alpha"] = selection.alphas or [forget.alpha]
    if method == "gs-lora++":
        axes["prototype_weight"] = selection.prototype_weights or [forget.prototype_weight]
    return [dict(zip(axes, map(float, values))) for values in itertools.product(*axes.values())]


def select_hyperparameters(config: RunConfig, base: FaceRecognizer, fit: FaceSet, val: FaceSet,
                           tasks: list[list[int]], journal: RunJournal | None = None) -> tuple[RunConfig, dict]:
    """Every candidate of every method (:func:`_candidates`) runs the task sequence on ``fit``
    (once per seed, ``config.repeats``) and is scored on ``val`` (mean H-Mean over the tasks and
    seeds); returns the config with the winners and the scores."""
    val_predictions = predict(base, val)
    report = {}
    for method in (config.method, "finetune"):
        candidates = _candidates(config, method)
        if not candidates or (method == "finetune" and method not in config.baselines.methods):
            continue
        scored = []
        for choice in candidates:
            results = run_repeated(method, base, fit, val, tasks, _with_choice(config, method, choice),
                                   val_predictions, journal=journal, keep_model=False, gallery_metrics=False)
            scored.append({**choice, "val_h_mean": sum(r["h_mean"] for r in results) / len(results)})
        best = max(scored, key=lambda c: c["val_h_mean"])
        chosen = {key: value for key, value in best.items() if key != "val_h_mean"}
        config = _with_choice(config, method, chosen)
        report[method] = {"candidates": scored, "chosen": chosen}
    return config, report


def run_forgetting(config: RunConfig | dict | str) -> dict:
    """Run a configured forgetting experiment end to end and write its outputs to ``output_dir``:
    ``model/`` (the edited recogniser, safetensors), ``report.json``, ``report.md`` and
    ``groups.png``. Returns the report (a JSON-ready dict).

    With ``selection.val_per_class`` > 0 the last images of every identity's training split are a
    validation split, held out of all training; learning rates are chosen on it
    (:func:`select_hyperparameters`) before the reported run on the test images. With ``repeats`` > 1
    every run is repeated with that many training seeds and the report holds means and spreads
    (:func:`run_repeated`). Every finished run is recorded in ``output_dir/journal/``
    (:class:`~idgen.unlearn.journal.RunJournal`): killed, the same call resumes where it stopped and
    reports the same numbers; the journal is removed when the report is written.

    ``output_dir`` must be new, empty, or an earlier forgetting run's (its journal or report.json),
    whose outputs this run replaces; anything else, a read-only folder or a full disk is refused
    before any training (:class:`~idgen.errors.OutputError`)."""
    if isinstance(config, dict):
        config = RunConfig.from_dict(config)
    elif not isinstance(config, RunConfig):
        config = RunConfig.load(config)
    if config.method not in ("gs-lora", "gs-lora++"):
        raise ConfigError(f"method must be 'gs-lora' or 'gs-lora++', not {config.method!r}")
    unknown = sorted(set(config.baselines.methods) - set(BASELINES))
    if unknown:
        raise ConfigError(f"baselines.methods: unknown {unknown}; choose from {list(BASELINES)}")
    if config.repeats < 1:
        raise ConfigError(f"repeats must be at least 1, not {config.repeats}")
    if config.selection.prototype_weights and config.method != "gs-lora++":
        raise ConfigError("selection.prototype_weights are GS-LoRA++'s prototype weights; "
                          "set method: gs-lora++ or leave the list empty")
    output = Path(config.output_dir)
    if check_output_folder(output, "output_dir", _holds_forgetting_run):
        remove_temporaries(output)
    with output_errors("run the same command again to resume"):
        return _run_forgetting(config, output)


def _holds_forgetting_run(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier forgetting run's output: its journal or its report."""
    try:
        return (folder / "journal").is_dir() or "methods" in json.loads((folder / "report.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _remove_saved_model(folder: Path) -> None:
    """Delete the edited model an earlier run saved in ``folder`` (the files of
    :func:`~idgen.models.save_recognizer`), and the folder if nothing else is left in it."""
    for name in ("model.safetensors", "config.json"):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _run_forgetting(config: RunConfig, output: Path) -> dict:
    """:func:`run_forgetting` once ``config`` is checked and ``output`` is ready for it."""
    from .report import write_report

    journal = RunJournal(output / "journal")
    torch.manual_seed(config.seed)
    train, test = load_face_folder(config.data)
    train, val = train.hold_out(config.selection.val_per_class)
    extra = None
    needs_training = not (Path(config.model.path) / "model.safetensors").is_file()
    if config.model.train.distill_from and (needs_training or "retrain" in config.baselines.methods):
        t = config.model.train
        train, extra = prepare_distillation(train, config.data, t.distill_from, t.distill_images,
                                            t.distill_max_images, t.seed)
    base, base_info = load_or_train_base(config, train, test, extra)
    tasks = resolve_tasks(config, train.class_names)
    finished = journal.finished()
    if finished:
        tqdm.write(f"idgen forget: resuming, {finished} finished runs in {journal.folder} are reused")
    selection = {}
    if len(val):
        config, selection = select_hyperparameters(config, base, train, val, tasks, journal)
    base_predictions = predict(base, test)
    report = {
        "config": asdict(config),
        "data": {"identities": len(train.class_names), "train_images": len(train), "test_images": len(test),
                 "validation_images": len(val)},
        "base": {**base_info, "accuracy": accuracy(base_predictions, test.labels, range(len(train.class_names))),
                 "parameters": base.num_parameters(), "model_config": asdict(base.config)},
        "tasks": [[train.class_names[c] for c in task] for task in tasks],
        "selection": selection,
        "methods": {},
    }
    for method in [config.method, *config.baselines.methods]:
        report["methods"][method] = run_repeated(method, base, train, test, tasks, config, base_predictions, extra,
                                                 journal, keep_model=method == config.method)
    edited = report["methods"][config.method][-1].pop("model")
    if config.save_model:
        edited.save_pretrained(output / "model", train.class_names)
    else:   # an earlier run's model beside this run's report would pass for this run's
        _remove_saved_model(output / "model")
    write_report(report, output)
    journal.remove()
    return report
