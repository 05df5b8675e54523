"""Train identity conditioning (``id-adapter``), a one-person LoRA (``personalize``), or a whole
Arc2Face-style model (``vae``, then ``id-model``).

    accelerate launch training/train.py --config training/configs/id_adapter.yaml [section.key=value ...]
    accelerate launch --cpu training/train.py --config ... --resume latest

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 training/train.py --config ...  # 2 CPU processes

One loop for every task; what differs between tasks is their recipe (:mod:`idgen.training.recipes`:
what is trained, the loss, validation, what is saved). LoRA tasks save
``pytorch_lora_weights.safetensors``; ``vae`` saves ``vae/``; ``id-model`` saves the whole pipeline
(``Arc2FacePipeline.from_pretrained(output_dir)`` loads it).

Which examples micro-step ``k`` uses, and all their randomness (noise, timesteps, flips, guidance
dropout), are a function of (seed, k, position of the example), so ``--resume latest`` continues with
exactly the losses of an uninterrupted run, and P processes with batch b train like one process with
batch P·b.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from idgen.errors import ConfigError, IdgenError, OutputError
from idgen.faces import FaceAnalyzer
from idgen.faces.published import FACE_BACKENDS, warn_if_foreign
from idgen.io import atomic_path, check_output_folder, os_error_message, remove_temporaries, write_bytes_atomic, write_json_atomic
from idgen.training import (IdentityCache, TrainConfig, default_cache_path, latest_checkpoint, make_optimizer,
                            prune_checkpoints, read_people, register_trainable_state, scan_faces)
from idgen.training import validation
from idgen.training.checkpoints import list_checkpoints, resume
from idgen.training.distributed import check_launch, replica_spread
from idgen.training.recipes import Recipe, averaged_weights, make_recipe


def holds_training_run(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier run of this script: the config.yaml it writes first (a
    training config: ``task`` and ``optim``) or a ``checkpoint-N`` folder."""
    try:
        written = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        written = None
    return (isinstance(written, dict) and {"task", "optim"} <= written.keys()) or bool(list_checkpoints(folder))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (training/configs/*.yaml); relative paths in it are "
                                          "relative to the file")
    parser.add_argument("--resume", help="'latest' (newest checkpoint in output_dir, if any) or a checkpoint folder")
    parser.add_argument("overrides", nargs="*", help="section.key=value (values parsed as YAML; relative paths "
                                                     "relative to the current directory), e.g. optim.max_steps=100")
    return parser.parse_args(argv)


def load(args):
    """The training config the command line asks for."""
    if not args.config:
        raise ConfigError("no config given; pass --config training/configs/<name>.yaml")
    return TrainConfig.load(args.config, args.overrides)


def open_output_folder(accelerator, out: Path, resume_from) -> None:
    """Refuse a folder that holds something else, or an earlier run not being resumed; clear the
    temporaries an interrupted run left."""
    resuming = check_output_folder(out, "output_dir", holds_training_run)
    if resuming and not resume_from:
        raise OutputError(f"{out} holds an earlier training run; continue it with --resume latest, or give "
                          "output_dir a new or empty folder")
    if resuming and accelerator.is_main_process:
        remove_temporaries(out)
    accelerator.wait_for_everyone()


def read_faces(accelerator, cfg, out: Path):
    """The training and validation photos, before any model loads (bad folders fail first): the main
    process analyses, the others read its cache. Writes config.yaml (marking the folder as this
    run's) and data_report.json."""
    data = cfg.data
    analyzer = FaceAnalyzer.from_backend(data.detector, data.recognizer, det_size=data.det_size,
                                         upsample=data.upsample, flip=data.recognizer_flip)
    if cfg.model.arc2face:   # the published Arc2Face conditions on its own arcface.onnx's embeddings
        warn_if_foreign(analyzer, FACE_BACKENDS["arc2face"], f"model.arc2face ({cfg.model.arc2face})", "data.recognizer")
    cache = IdentityCache(data.identity_cache or default_cache_path(data.detector, data.recognizer,
                                                                    data.recognizer_flip))
    with accelerator.main_process_first():
        train_faces = scan_faces(data.faces_dir, analyzer, cache, exclude=read_people(data.exclude_people))
        val_faces = (scan_faces(cfg.validation.faces_dir, analyzer, IdentityCache(cache.path), what="validation.faces_dir",
                                only=read_people(cfg.validation.people) if cfg.validation.people else None)
                     if cfg.validation.faces_dir else None)
    if accelerator.is_main_process:
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json_atomic(out / "data_report.json", {"train": train_faces.report(),
                                                     "validation": val_faces.report() if val_faces else None})
        print(f"data: {len(train_faces.files)} photos used, {len(train_faces.skipped)} skipped "
              f"({train_faces.analysed} analysed now, the rest cached) -> {out / 'data_report.json'}")
    return train_faces, val_faces


def prepare_optimization(accelerator, cfg, recipe: Recipe):
    """The optimizer, its learning-rate schedule and the EMA (``None`` without ``optim.ema_decay``),
    all registered for checkpointing with the recipe's trainable tensors."""
    optimizer = make_optimizer(recipe.groups, cfg.optim, accelerator.device)
    accelerator.print(f"optimizer: {type(optimizer).__name__}, {accelerator.num_processes} process(es), "
                      f"mixed precision {accelerator.mixed_precision}")
    lr_scheduler = get_scheduler(cfg.optim.learning_rate_scheduler, optimizer,
                                 num_warmup_steps=cfg.optim.learning_rate_warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.optim.max_steps * accelerator.num_processes)
    optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)
    register_trainable_state(accelerator, recipe.trainable)
    ema = None
    if cfg.optim.ema_decay is not None:
        ema = EMAModel(recipe.params, decay=cfg.optim.ema_decay)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    return optimizer, lr_scheduler, ema


def resume_run(accelerator, out: Path, resume_from) -> int:
    """Load the checkpoint ``--resume`` names (if any) and cut log.jsonl back to its step; returns it."""
    start = 0
    checkpoint = latest_checkpoint(out) if resume_from == "latest" else (Path(resume_from) if resume_from else None)
    if checkpoint is not None:
        start = resume(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint} at step {start}")
    log_path = out / "log.jsonl"
    if accelerator.is_main_process and log_path.exists():
        lines = [l for l in log_path.read_text().splitlines() if json.loads(l)["step"] <= start]
        write_bytes_atomic(log_path, "".join(l + "\n" for l in lines).encode())
    return start


def train_step(accelerator, recipe: Recipe, optimizer, lr_scheduler, step: int, optim) -> tuple[float, list[int]]:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches: the loss averaged over
    micro-batches and processes, and the examples every process used, in stream order."""
    accum, step_loss, examples = optim.gradient_accumulation_steps, 0.0, []
    for micro in range(accum):
        batch = recipe.batch(step * accum + micro)
        with accelerator.accumulate(*recipe.synced), accelerator.autocast():
            loss = recipe.loss(batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                recipe.average_gradients()
                accelerator.clip_grad_norm_(recipe.params, optim.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step_loss += accelerator.gather(loss.detach().float()).mean().item() / accum
        examples += accelerator.gather(torch.tensor(batch["indices"], device=accelerator.device)).tolist()
    return step_loss, examples


def append_log(out: Path, record: dict) -> None:
    """One line of log.jsonl (a step's loss, task metrics and examples)."""
    with open(out / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def validate(accelerator, recipe: Recipe, ema, out: Path, step: int) -> dict:
    """The recipe's validation on the main process: the grid saved and logged, the metrics logged."""
    if recipe.valset is None or not accelerator.is_main_process:
        return {}
    metrics, image = recipe.validate(ema)
    validation.save_grid(image, out / "validation" / f"step-{step:06d}.png")
    accelerator.get_tracker("tensorboard").writer.add_image("validation/grid", image, step, dataformats="HWC")
    metrics = {f"val/{k}": v for k, v in metrics.items()}
    accelerator.log(metrics, step=step)
    return metrics


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load(args)
    out, optim = Path(cfg.output_dir), cfg.optim
    accelerator = Accelerator(mixed_precision=optim.mixed_precision, log_with="tensorboard",
                              gradient_accumulation_steps=optim.gradient_accumulation_steps,
                              project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    check_launch(accelerator, optim.mixed_precision)
    open_output_folder(accelerator, out, args.resume)
    train_faces, val_faces = read_faces(accelerator, cfg, out)

    set_seed(cfg.seed)
    recipe = make_recipe(cfg, accelerator, train_faces, val_faces)
    optimizer, lr_scheduler, ema = prepare_optimization(accelerator, cfg, recipe)
    start = resume_run(accelerator, out, args.resume)
    accelerator.init_trackers("idgen")

    main_process, started, losses, metrics = accelerator.is_main_process, time.time(), [], {}
    for model in recipe.trained:
        model.train()
    bar = tqdm(total=optim.max_steps, initial=start, desc=cfg.task, disable=not main_process, unit="step")
    for step in range(start, optim.max_steps):
        step_loss, examples = train_step(accelerator, recipe, optimizer, lr_scheduler, step, optim)
        if ema is not None:
            ema.step(recipe.params)
        done, lr, step_metrics = step + 1, lr_scheduler.get_last_lr()[0], recipe.step_metrics()
        losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        if done % cfg.logging.log_every == 0:
            accelerator.log({"train/loss": step_loss, "train/lr": lr,
                             **{f"train/{k}": v for k, v in step_metrics.items() if v is not None}}, step=done)
        if main_process:
            append_log(out, {"step": done, "loss": step_loss, **step_metrics, "examples": examples})
        if done % cfg.validation.every == 0 or done == optim.max_steps:
            metrics = validate(accelerator, recipe, ema, out, done) or metrics
        if done % cfg.logging.checkpoint_every == 0 and done < optim.max_steps:
            accelerator.save_state(str(out / f"checkpoint-{done}"))
            if main_process:
                prune_checkpoints(out, cfg.logging.checkpoints_total_limit)
    bar.close()

    accelerator.wait_for_everyone()
    spread = replica_spread(accelerator, recipe.params)
    if main_process:
        with averaged_weights(ema, recipe.params):
            saved = recipe.save(out)
        tail = losses[-10:]
        write_json_atomic(out / "metrics.json", {
            "task": cfg.task, "steps": optim.max_steps, "resumed_from": start,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "steps_per_s": len(losses) / (time.time() - started), **metrics,
            "processes": accelerator.num_processes, "gradient_sync": recipe.gradient_sync,
            "replica_max_abs_diff": spread,
            "mixed_precision": accelerator.mixed_precision, "optimizer": type(optimizer.optimizer).__name__,
            "data": {"train_used": len(train_faces.files), "train_skipped": len(train_faces.skipped)}})
        print(f"saved {saved} and {out / 'metrics.json'}")
    accelerator.end_training()


if __name__ == "__main__":
    try:
        main()
    except IdgenError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:   # one no check foresaw (a disk filling mid-run): the path, the reason, the fix
        print(f"train.py: error: {os_error_message(exc)}", file=sys.stderr)
        sys.exit(1)
