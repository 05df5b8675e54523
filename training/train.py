"""Train identity conditioning (``id-adapter``), a one-person LoRA (``personalize``), or a whole
Arc2Face-style model (``vae``, then ``id-model``).

    accelerate launch training/train.py --config training/configs/id_adapter.yaml [section.key=value ...]
    accelerate launch --cpu training/train.py --config ... --resume latest

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 training/train.py --config ...  # 2 CPU processes

One loop for every task; the pieces live in :mod:`idgen.training`. LoRA tasks train adapters on
frozen weights and save ``pytorch_lora_weights.safetensors``; ``vae`` trains an ``AutoencoderKL``
on aligned crops and saves ``vae/``; ``id-model`` trains the UNet and the text encoder on that
VAE's latents, conditioned exactly as :class:`~idgen.pipelines.Arc2FacePipeline` conditions, and
saves the whole pipeline (``Arc2FacePipeline.from_pretrained(output_dir)`` loads it).

Which examples micro-step ``k`` uses, and all their randomness (noise, timesteps, flips, guidance
dropout), are a function of (seed, k, position of the example), so ``--resume latest`` continues with exactly the losses of an
uninterrupted run, and P processes with batch b train like one process with batch P·b.
"""

from __future__ import annotations

import argparse
import contextlib
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
from idgen.io import (atomic_path, check_output_folder, os_error_message, remove_temporaries, save_pretrained_atomic,
                      write_bytes_atomic, write_json_atomic)
from idgen.training import (Conditioning, FaceDataset, IdentityCache, SeededBatches, add_training_lora,
                            build_pipeline, default_cache_path, full_training_groups,
                            latent_diffusion_loss, latest_checkpoint, load_components, load_config, make_optimizer,
                            new_components, prune_checkpoints, read_people, register_trainable_state, standardize_latents,
                            save_lora_weights, scan_faces, vae_loss)
from idgen.training.config import FULL_TASKS
from idgen.training import validation
from idgen.training.checkpoints import list_checkpoints, resume
from idgen.training.distributed import average_gradients, check_launch, replica_spread
from idgen.training.identity_loss import IdentityLoss, identity_diffusion_loss
from idgen.training.randomness import rand
from idgen.training.prior import prior_images


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
    return load_config(args.config, args.overrides)


@contextlib.contextmanager
def averaged_weights(ema, params):
    """Inside: the EMA weights in the model (for validation and saving); after: the trained ones."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load(args)
    out = Path(cfg.output_dir)
    accelerator = Accelerator(mixed_precision=cfg.optim.mixed_precision, log_with="tensorboard",
                              gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
                              project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    main_process, device = accelerator.is_main_process, accelerator.device
    check_launch(accelerator, cfg.optim.mixed_precision)
    resuming = check_output_folder(out, "output_dir", holds_training_run)
    if resuming and not args.resume:
        raise OutputError(f"{out} holds an earlier training run; continue it with --resume latest, or give "
                          "output_dir a new or empty folder")
    if resuming and main_process:
        remove_temporaries(out)
    accelerator.wait_for_everyone()

    # Data first: bad folders fail before any model loads. The main process analyses; the rest read its cache.
    analyzer = FaceAnalyzer.from_backend(cfg.data.detector, cfg.data.recognizer, det_size=cfg.data.det_size,
                                         upsample=cfg.data.upsample, flip=cfg.data.recognizer_flip)
    cache_path = cfg.data.identity_cache or default_cache_path(cfg.data.detector, cfg.data.recognizer,
                                                               cfg.data.recognizer_flip)
    with accelerator.main_process_first():
        train_faces = scan_faces(cfg.data.faces_dir, analyzer, IdentityCache(cache_path),
                                 exclude=read_people(cfg.data.exclude_people))
        val_faces = (scan_faces(cfg.validation.faces_dir, analyzer, IdentityCache(cache_path), what="validation.faces_dir",
                                only=read_people(cfg.validation.people) if cfg.validation.people else None)
                     if cfg.validation.faces_dir else None)
    report = {"train": train_faces.report(), "validation": val_faces.report() if val_faces else None}
    if main_process:   # config.yaml first: it marks the folder as this run's (holds_training_run)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json_atomic(out / "data_report.json", report)
        print(f"data: {len(train_faces.files)} photos used, {len(train_faces.skipped)} skipped "
              f"({train_faces.analysed} analysed now, the rest cached) -> {out / 'data_report.json'}")

    set_seed(cfg.seed)
    full = cfg.task in FULL_TASKS
    if full:
        parts = new_components(cfg.model, cfg.task)
        groups, trainable = full_training_groups(parts, cfg.task, cfg.optim, device)
    else:
        parts = load_components(cfg.model).freeze(device, cfg.optim.mixed_precision)
    pipe = build_pipeline(parts, cfg.model.conditioning) if parts.unet is not None else None
    conditioning = Conditioning(pipe, cfg.model.conditioning) if pipe is not None else None
    # optim.id_loss_weight: the conditioning recogniser, frozen and rebuilt from its ONNX file (not checkpointed)
    identity = IdentityLoss.from_config(cfg, device) if cfg.optim.id_loss_weight else None
    prompt = cfg.data.instance_prompt if cfg.task == "personalize" else ""
    dataset = FaceDataset(train_faces.files, train_faces.id_embeds, cfg.data.resolution, prompt,
                          train_faces.landmarks, cfg.data.face_scale)
    batches = SeededBatches(dataset, cfg.optim.batch_size, cfg.seed, accelerator.num_processes, accelerator.process_index)
    prior_batches = None
    if cfg.task == "personalize" and cfg.prior.enabled:  # made by the frozen model, before any LoRA exists
        with accelerator.main_process_first(), accelerator.autocast():
            files, ids = prior_images(pipe, cfg.model.conditioning, out / "prior", cfg.prior,
                                      id_dim=train_faces.id_embeds.shape[1], class_prompt=cfg.data.class_prompt,
                                      resolution=cfg.data.resolution, seed=cfg.seed)
        prior_set = FaceDataset(files, ids, cfg.data.resolution, cfg.data.class_prompt)
        prior_batches = SeededBatches(prior_set, cfg.optim.batch_size, cfg.seed + 1,
                                      accelerator.num_processes, accelerator.process_index)

    if not full:
        groups, trainable = add_training_lora(parts, cfg.lora, cfg.optim)
    trained = [m for m in trainable.values() if m is not None]
    params = [p for group in groups for p in group["params"]]
    if cfg.optim.gradient_checkpointing and parts.unet is not None:
        parts.unet.enable_gradient_checkpointing()
        if trainable.get("text_encoder") is not None:
            parts.text_encoder.gradient_checkpointing_enable()
    optimizer = make_optimizer(groups, cfg.optim, device)
    accelerator.print(f"optimizer: {type(optimizer).__name__}, {accelerator.num_processes} process(es), "
                      f"mixed precision {accelerator.mixed_precision}")
    lr_scheduler = get_scheduler(cfg.optim.lr_scheduler, optimizer,
                                 num_warmup_steps=cfg.optim.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.optim.max_steps * accelerator.num_processes)
    optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)
    register_trainable_state(accelerator, trainable)
    ema = None
    if cfg.optim.ema_decay is not None:
        ema = EMAModel(params, decay=cfg.optim.ema_decay)
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    evaluator = valset = None
    if val_faces is not None and cfg.task == "vae":
        valset = val_faces
    elif val_faces is not None:
        evaluator = FaceAnalyzer.from_backend(cfg.validation.detector or cfg.data.detector,
                                              cfg.validation.recognizer or cfg.data.recognizer,
                                              det_size=cfg.data.det_size, fallback_box=cfg.validation.fallback_box,
                                              upsample=cfg.validation.upsample)
        valset = validation.prepare_validation(val_faces, cfg.validation, evaluator)

    start = 0
    checkpoint = latest_checkpoint(out) if args.resume == "latest" else (Path(args.resume) if args.resume else None)
    if checkpoint is not None:
        start = resume(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint} at step {start}")
    accelerator.init_trackers("idgen")
    log_path = out / "log.jsonl"
    if main_process and log_path.exists():  # keep the history up to the resumed step
        lines = [l for l in log_path.read_text().splitlines() if json.loads(l)["step"] <= start]
        write_bytes_atomic(log_path, "".join(l + "\n" for l in lines).encode())

    def validate(step: int) -> dict:
        if valset is None or not main_process:
            return {}
        for model in trained:
            model.eval()
        with averaged_weights(ema, params), accelerator.autocast():
            if cfg.task == "vae":
                metrics, image = validation.reconstructions(parts.vae, valset, cfg.validation.num_identities,
                                                            cfg.data.resolution, cfg.data.face_scale)
            else:
                renders = validation.render(pipe, cfg.model.conditioning, valset, cfg.validation,
                                            cfg.data.resolution, cfg.seed, prompt)
        for model in trained:
            model.train()
        if cfg.task != "vae":
            metrics = validation.score(renders, valset, evaluator, cfg.validation.images_per_identity)
            image = validation.grid(renders, valset, cfg.validation.images_per_identity, cfg.data.face_scale)
        validation.save_grid(image, out / "validation" / f"step-{step:06d}.png")
        accelerator.get_tracker("tensorboard").writer.add_image("validation/grid", image, step, dataformats="HWC")
        metrics = {f"val/{k}": v for k, v in metrics.items()}
        accelerator.log(metrics, step=step)
        return metrics

    for model in trained:
        model.train()
    accum, started, losses, metrics = cfg.optim.gradient_accumulation_steps, time.time(), [], {}
    bar = tqdm(total=cfg.optim.max_steps, initial=start, desc=cfg.task, disable=not main_process, unit="step")
    for step in range(start, cfg.optim.max_steps):
        step_loss, examples, id_loss, cosines = 0.0, [], 0.0, []
        for micro in range(accum):
            k = step * accum + micro
            batch = batches.batch(k)
            flip = rand(batch["generators"]) < cfg.data.flip
            batch["pixel_values"] = torch.where(flip[:, None, None, None], batch["pixel_values"].flip(-1),
                                                batch["pixel_values"])
            learns_identity = cfg.task in ("id-adapter", "id-model")
            drop = rand(batch["generators"]) < cfg.optim.cfg_dropout if learns_identity else None
            with accelerator.accumulate(), accelerator.autocast():
                if cfg.task == "vae":
                    per_sample = vae_loss(parts.vae, batch["pixel_values"], batch["generators"], cfg.optim.kl_weight)
                elif identity is not None:
                    per_sample, term = identity_diffusion_loss(
                        identity, parts.unet, parts.vae, parts.noise_scheduler, batch["pixel_values"],
                        conditioning(batch, device, drop), batch["generators"], batch["id_embeds"], ~drop, flip,
                        noise_offset=cfg.optim.noise_offset, snr_gamma=cfg.optim.snr_gamma)
                    id_loss += accelerator.gather(term.loss.detach()).mean().item() / accum
                    cosines.append(accelerator.gather(term.cosine))
                else:
                    per_sample = latent_diffusion_loss(parts.unet, parts.vae, parts.noise_scheduler,
                                                       batch["pixel_values"], conditioning(batch, device, drop),
                                                       batch["generators"], noise_offset=cfg.optim.noise_offset,
                                                       snr_gamma=cfg.optim.snr_gamma)
                loss = per_sample.mean()
                if prior_batches is not None:
                    prior = prior_batches.batch(k)
                    loss = loss + cfg.prior.weight * latent_diffusion_loss(
                        parts.unet, parts.vae, parts.noise_scheduler, prior["pixel_values"],
                        conditioning(prior, device), prior["generators"], noise_offset=cfg.optim.noise_offset,
                        snr_gamma=cfg.optim.snr_gamma).mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    average_gradients(accelerator, params)
                    accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += accelerator.gather(loss.detach().float()).mean().item() / accum
            examples += accelerator.gather(torch.tensor(batch["indices"], device=device)).tolist()
        if ema is not None:
            ema.step(params)
        losses.append(step_loss)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        # the identity term (in train/loss too) and the mean cosine of the examples it applied to (None: none did)
        id_metrics = {}
        if identity is not None:
            cosine = torch.cat(cosines).nanmean()
            id_metrics = {"id_loss": id_loss, "id_cosine": None if cosine.isnan() else cosine.item()}
        if done % cfg.logging.log_every == 0:
            accelerator.log({"train/loss": step_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                             **{f"train/{k}": v for k, v in id_metrics.items() if v is not None}}, step=done)
        if main_process:
            with open(log_path, "a") as handle:
                handle.write(json.dumps({"step": done, "loss": step_loss, **id_metrics, "examples": examples}) + "\n")
        if done % cfg.validation.every == 0 or done == cfg.optim.max_steps:
            metrics = validate(done) or metrics
        if done % cfg.logging.checkpoint_every == 0 and done < cfg.optim.max_steps:
            accelerator.save_state(str(out / f"checkpoint-{done}"))
            if main_process:
                prune_checkpoints(out, cfg.logging.checkpoints_total_limit)
    bar.close()

    accelerator.wait_for_everyone()
    spread = replica_spread(accelerator, params)
    if main_process:
        with averaged_weights(ema, params):
            if cfg.task == "vae":
                standardize_latents(parts.vae, (batches.batch(k)["pixel_values"] for k in range(4)))
                save_pretrained_atomic(parts.vae, out / "vae")
                saved = out / "vae"
            elif cfg.task == "id-model":
                save_pretrained_atomic(pipe, out, index_file="model_index.json")
                saved = out / "model_index.json"
            else:
                saved = save_lora_weights(out, parts.unet, trainable["text_encoder"])
        tail = losses[-10:]
        write_json_atomic(out / "metrics.json", {
            "task": cfg.task, "steps": cfg.optim.max_steps, "resumed_from": start,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "steps_per_s": len(losses) / (time.time() - started), **metrics,
            "processes": accelerator.num_processes, "replica_max_abs_diff": spread,
            "mixed_precision": accelerator.mixed_precision, "optimizer": type(optimizer.optimizer).__name__,
            "data": {"train_used": len(train_faces.files), "train_skipped": len(train_faces.skipped)},
        })
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
