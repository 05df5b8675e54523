"""The Arc2Face recipe in full: ``task: vae`` and ``task: id-model`` of training/train.py.

Tiny versions of the mini-model configs (``training/configs/mini_lfw64*.yaml``) run through
``accelerate launch`` on real photos: people listed in a held-out file never reach training and are
the only ones validated on; a run resumed from its step-2 checkpoint ends exactly like the
uninterrupted one (EMA included); the outputs load with ``from_pretrained``. In-process, the loss
falls on a fixed batch for both tasks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from test_training import launch, log, losses
from tiny_sd import TINY_TEXT, TINY_UNET, TINY_VAE, tokenizer as clip_or_tiny_tokenizer

pytest.importorskip("dlib")
pytest.importorskip("tensorboard")
pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
RESOLUTION = 32
TINY_SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                  "beta_end": 0.012, "clip_sample": False}


def flow(mapping: dict) -> str:
    """A config dict as one YAML flow mapping, for a ``key=value`` override."""
    return yaml.safe_dump(mapping, default_flow_style=True, width=10_000).strip()


@pytest.fixture(scope="module")
def people(tmp_path_factory, faces_dir) -> dict:
    """LFW's layout: one folder per person. Angelina_Jolie is the held-out person (listed in a
    peopleDevTest-style file); the others are for training."""
    root = tmp_path_factory.mktemp("people")
    for name in ("Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0002.jpg", "Abdullah_Gul_0001.jpg", "Angelina_Jolie_0001.jpg"):
        person = root / "images" / name.rsplit("_", 1)[0]
        person.mkdir(parents=True, exist_ok=True)
        shutil.copy(faces_dir / name, person / name)
    (root / "heldout.txt").write_text("1\nAngelina_Jolie\t1\n")
    return {"images": root / "images", "heldout": root / "heldout.txt", "cache": root / "ids.safetensors"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> tuple[Path, bool]:
    """The real CLIP tokenizer (then reduced by the trainer) when ../shared has it, else the tiny one."""
    folder = tmp_path_factory.mktemp("tokenizer")
    tok = clip_or_tiny_tokenizer()
    tok.save_pretrained(folder)
    return folder, len(tok) > 1000


def common_args(config: str, out: Path, people: dict) -> list[str]:
    return ["--config", str(ROOT / "training/configs" / config), f"output_dir={out}",
            f"data.faces_dir={people['images']}", f"data.exclude_people=[{people['heldout']}]",
            f"data.identity_cache={people['cache']}", "data.recognizer=dlib", "data.recognizer_flip=false",
            f"data.resolution={RESOLUTION}", f"validation.faces_dir={people['images']}",
            f"validation.people=[{people['heldout']}]", "optim.batch_size=2", "optim.learning_rate_warmup_steps=0",
            "optim.max_steps=3", "optim.gradient_accumulation_steps=2", "logging.checkpoint_every=2",
            "validation.every=3"]


def vae_args(out: Path, people: dict) -> list[str]:
    return common_args("mini_lfw64_vae.yaml", out, people) + [f"model.vae_config={flow(TINY_VAE)}"]


def id_model_args(out: Path, people: dict, vae: Path, tokenizer: tuple[Path, bool]) -> list[str]:
    folder, real_clip = tokenizer
    return common_args("mini_lfw64.yaml", out, people) + [
        f"model.vae={vae}", f"model.tokenizer={folder}", f"model.reduced_vocabulary={str(real_clip).lower()}",
        f"model.unet_config={flow(TINY_UNET)}", f"model.scheduler_config={flow(TINY_SCHEDULER)}",
        f"model.text_encoder_config={flow({k: v for k, v in TINY_TEXT.items()})}", "optim.learning_rate=1e-3",
        "optim.ema_decay=0.9", "validation.num_identities=1", "validation.num_inference_steps=2",
        "validation.upsample=0"]


def resume(run: Path, out: Path, args: list[str]) -> None:
    """Continue ``run`` from its step-2 checkpoint in ``out``, keeping its log up to step 2."""
    out.mkdir()
    shutil.copytree(run / "checkpoint-2", out / "checkpoint-2")
    kept = [l for l in (run / "log.jsonl").read_text().splitlines() if json.loads(l)["step"] <= 2]
    (out / "log.jsonl").write_text("\n".join(kept) + "\n")
    result = launch(args + ["--resume", "latest"])
    assert "resumed from" in result.stdout + result.stderr


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=1e-6) for k in x)


@pytest.fixture(scope="module")
def vae_run(people, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    launch(vae_args(out, people))
    return out


@pytest.fixture(scope="module")
def id_run(people, vae_run, tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "id-model"
    launch(id_model_args(out, people, vae_run / "vae", tokenizer_dir))
    return out


# ---------------------------------------------------------------- data
def test_people_lists_in_lfw_formats(tmp_path):
    from idgen.training import read_people

    (tmp_path / "people.txt").write_text("2\nAJ_Lamas\t1\nAaron_Guiel\t3\n")
    (tmp_path / "pairs.txt").write_text("2\nAbdullah_Gul\t13\t14\nLucy_Liu\t2\tLuis_Figo\t4\n")
    names = read_people([tmp_path / "people.txt", tmp_path / "pairs.txt"])
    assert names == {"AJ_Lamas", "Aaron_Guiel", "Abdullah_Gul", "Lucy_Liu", "Luis_Figo"}


def test_held_out_people_never_reach_training(vae_run, people):
    report = json.loads((vae_run / "data_report.json").read_text())
    assert report["train"]["used"] == 3 and report["validation"]["used"] == 1
    config = yaml.safe_load((vae_run / "config.yaml").read_text())
    assert config["data"]["exclude_people"] == [str(people["heldout"])]


# ---------------------------------------------------------------- task: vae
def test_vae_loss_falls_on_a_fixed_batch(people):
    from idgen.training import TrainConfig, full_training_groups, new_components, vae_loss
    from idgen.training.data import load_training_image

    torch.manual_seed(0)
    config = TrainConfig.load(ROOT / "training/configs/mini_lfw64_vae.yaml", [f"model.vae_config={flow(TINY_VAE)}"])
    parts = new_components(config.model, "vae")
    groups, models = full_training_groups(parts, "vae", config.optim, "cpu")
    assert list(models) == ["vae"] and all(p.requires_grad for p in parts.vae.parameters())
    optimizer = torch.optim.AdamW(groups, lr=2e-3)
    pixels = torch.stack([load_training_image(p, RESOLUTION) for p in sorted(people["images"].rglob("*.jpg"))[:2]])
    history = []
    for _ in range(15):
        generators = [torch.Generator().manual_seed(i) for i in range(2)]
        loss = vae_loss(parts.vae, pixels, generators, config.optim.kl_weight).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], history


def test_vae_run_saves_a_loadable_vae_with_standardised_latents(vae_run, people):
    from diffusers import AutoencoderKL

    from idgen.training.data import load_training_image

    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert metrics["task"] == "vae" and np.isfinite(metrics["final_loss"]) and 0 < metrics["val/psnr"] < 60
    vae = AutoencoderKL.from_pretrained(vae_run / "vae")
    assert vae.config.block_out_channels == TINY_VAE["block_out_channels"]
    # the scale makes the training latents unit-variance (fitted on the run's batches of these 3 photos)
    photos = [p for p in sorted(people["images"].rglob("*.jpg")) if "Angelina" not in p.name]
    with torch.no_grad():
        latents = vae.encode(torch.stack([load_training_image(p, RESOLUTION) for p in photos])).latent_dist.mean
    # standardised per channel on the run's batches of these 3 photos, folded into the VAE
    assert vae.config.scaling_factor == 1.0
    assert latents.mean(dim=(0, 2, 3)).abs().max().item() < 0.35
    assert 0.7 < latents.std(dim=(0, 2, 3)).min().item() and latents.std(dim=(0, 2, 3)).max().item() < 1.4
    grid = np.asarray(Image.open(vae_run / "validation" / "step-000003.png"))
    assert grid.shape == (2 * RESOLUTION, RESOLUTION, 3)  # the held-out photo over its reconstruction


def test_vae_resume_reproduces_the_uninterrupted_run(vae_run, people, tmp_path):
    out = tmp_path / "resumed"
    resume(vae_run, out, vae_args(out, people))
    assert abs(losses(out)[3] - losses(vae_run)[3]) <= 1e-6
    assert_same_weights(vae_run / "vae" / "diffusion_pytorch_model.safetensors",
                        out / "vae" / "diffusion_pytorch_model.safetensors")


# ---------------------------------------------------------------- task: id-model
def test_id_model_loss_falls_on_a_fixed_batch(vae_run, tokenizer_dir):
    from idgen.training import (Conditioning, TrainConfig, build_pipeline, full_training_groups, latent_diffusion_loss,
                                new_components)

    torch.manual_seed(0)
    folder, real_clip = tokenizer_dir
    config = TrainConfig.load(ROOT / "training/configs/mini_lfw64.yaml", [
        f"model.vae={vae_run / 'vae'}", f"model.tokenizer={folder}", f"model.reduced_vocabulary={str(real_clip).lower()}",
        f"model.unet_config={flow(TINY_UNET)}", f"model.text_encoder_config={flow(TINY_TEXT)}"])
    parts = new_components(config.model, "id-model")
    groups, models = full_training_groups(parts, "id-model", config.optim, "cpu")
    assert sorted(models) == ["text_encoder", "unet"] and not any(p.requires_grad for p in parts.vae.parameters())
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    conditioning = Conditioning(build_pipeline(parts, "arc2face"), "arc2face")
    batch = {"pixel_values": torch.rand(2, 3, RESOLUTION, RESOLUTION) * 2 - 1, "id_embeds": torch.randn(2, 128)}
    history, before = [], parts.text_encoder.get_input_embeddings().weight.detach().clone()
    for _ in range(12):
        generators = [torch.Generator().manual_seed(i) for i in range(2)]
        loss = latent_diffusion_loss(parts.unet, parts.vae, parts.noise_scheduler, batch["pixel_values"],
                                     conditioning(batch, "cpu"), generators).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(loss.item())
    assert history[-1] < 0.9 * history[0], history
    # the text encoder learns too (the identity reaches the UNet through it)
    assert not torch.equal(before, parts.text_encoder.get_input_embeddings().weight)


def test_id_model_output_is_an_arc2face_pipeline(id_run, tokenizer_dir):
    from idgen.pipelines import Arc2FacePipeline

    metrics = json.loads((id_run / "metrics.json").read_text())
    assert metrics["task"] == "id-model" and -1 <= metrics["val/id_similarity"] <= 1
    assert json.loads((id_run / "model_index.json").read_text())["_class_name"] == "Arc2FacePipeline"
    pipe = Arc2FacePipeline.from_pretrained(id_run)
    pipe.set_progress_bar_config(disable=True)
    if tokenizer_dir[1]:  # reduced from the real CLIP tokenizer: same tokens for the prompt, 500-odd rows
        assert len(pipe.tokenizer) < 600 and pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
        assert pipe.tokenizer.tokenize("photo of a id person") == ["photo</w>", "of</w>", "a</w>", "id</w>", "person</w>"]
    identity = torch.randn(1, 128, generator=torch.Generator().manual_seed(3))

    def render(seed):
        return pipe(id_embeds=identity, num_inference_steps=2, height=RESOLUTION, width=RESOLUTION,
                    generator=torch.Generator().manual_seed(seed), output_type="np").images

    first = render(0)
    assert first.shape == (1, RESOLUTION, RESOLUTION, 3)
    np.testing.assert_array_equal(first, render(0))
    assert np.abs(first - render(1)).max() > 1e-3


def test_id_model_resume_reproduces_the_uninterrupted_run_with_ema(id_run, people, vae_run, tokenizer_dir, tmp_path):
    out = tmp_path / "resumed"
    resume(id_run, out, id_model_args(out, people, vae_run / "vae", tokenizer_dir))
    assert abs(losses(out)[3] - losses(id_run)[3]) <= 1e-6
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert_same_weights(id_run / part, out / part)  # the saved weights are the EMA's: its state resumed too


@pytest.mark.parametrize("task", ["vae", "id-model"])
def test_two_processes_train_whole_networks_like_one(task, people, vae_run, id_run, tokenizer_dir, tmp_path):
    """2 CPU processes (gloo) × batch 1 against the 1-process × batch 2 run of the same task.

    The whole networks train under DistributedDataParallel (``accelerator.prepare``), which averages
    their gradients in buckets during the backward pass: the processes take the one-process run's
    examples, stay identical replicas, and compute its losses up to float32 summation order (a
    batch of 2 and two batches of 1 sum differently; Adam amplifies that over the steps)."""
    one = vae_run if task == "vae" else id_run
    out = tmp_path / "two"
    args = vae_args(out, people) if task == "vae" else id_model_args(out, people, vae_run / "vae", tokenizer_dir)
    launch(args + ["optim.batch_size=1"], processes=2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["gradient_sync"] == "DistributedDataParallel"
    assert metrics["replica_max_abs_diff"] == 0.0
    assert [r["examples"] for r in log(out)] == [r["examples"] for r in log(one)]
    a, b = losses(one), losses(out)
    assert a.keys() == b.keys() == {1, 2, 3}
    assert all(abs(a[k] - b[k]) <= 1e-4 * abs(a[k]) for k in a), (a, b)
    assert json.loads((one / "metrics.json").read_text())["gradient_sync"] == "none"


def test_reduced_tokenizer_tokenises_like_clip(clip_tokenizer_dir):
    from transformers import CLIPTokenizer

    from idgen.training.tokenizer import reduced_clip_tokenizer

    clip = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    small = reduced_clip_tokenizer(clip, ["photo", "of", "a", "id", "person"])
    for text in ("photo of a id person", "a person", ""):
        assert small.convert_ids_to_tokens(small(text).input_ids) == clip.convert_ids_to_tokens(clip(text).input_ids)
    assert small.decode(small("an astronaut").input_ids, skip_special_tokens=True) == "an astronaut"  # bytes
    assert len(small) == 525 and small("id", add_special_tokens=False).input_ids == [small.convert_tokens_to_ids("id</w>")]


def test_standardize_latents_whitens_each_channel_and_keeps_reconstructions():
    from diffusers import AutoencoderKL

    from idgen.training.components import standardize_latents

    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_VAE).eval()
    pixels = torch.rand(6, 3, RESOLUTION, RESOLUTION) * 2 - 1
    with torch.no_grad():
        before = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(before.mean).sample
    standardize_latents(vae, [pixels[:3], pixels[3:]])
    with torch.no_grad():
        after = vae.encode(pixels).latent_dist
        assert torch.allclose(vae.decode(after.mean).sample, reconstruction, atol=1e-5)
    assert vae.config.scaling_factor == 1.0
    assert torch.allclose(after.mean.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(after.mean.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-5)
    # the same affine map on every latent: the posterior noise is rescaled with its channel
    spread = before.mean.std(dim=(0, 2, 3))[None, :, None, None]
    assert torch.allclose(after.std, before.std / spread, rtol=1e-4)


def test_init_from_a_float16_export_trains_in_float32(vae_run, id_run, tmp_path):
    """The shipped model is stored in float16; continuing from it must train in float32 (float16
    Adam steps on a CPU gave NaN losses from the first step) and start from the same weights."""
    from idgen.pipelines import Arc2FacePipeline
    from idgen.training import TrainConfig, new_components

    exported = Arc2FacePipeline.from_pretrained(id_run, dtype=torch.float16)
    exported.save_pretrained(tmp_path / "fp16")
    config = TrainConfig.load(ROOT / "training/configs/mini_lfw64.yaml",
                         [f"model.vae={vae_run / 'vae'}", f"model.init={tmp_path / 'fp16'}"])
    parts = new_components(config.model, "id-model")
    for module in (parts.unet, parts.text_encoder, parts.vae):
        assert {p.dtype for p in module.parameters()} == {torch.float32}
    for name, weight in parts.text_encoder.state_dict().items():
        torch.testing.assert_close(weight, exported.text_encoder.state_dict()[name].float(), rtol=0, atol=0)


def test_export_fp16_halves_the_weights_and_keeps_every_stage_of_the_record(id_run, tmp_path):
    import subprocess
    import sys

    from safetensors import safe_open

    def export(run, target):
        result = subprocess.run([sys.executable, str(ROOT / "training/export_fp16.py"), str(run), str(target)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    export(id_run, tmp_path / "stage1")
    with safe_open(str(tmp_path / "stage1/unet/diffusion_pytorch_model.safetensors"), framework="pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}
    first = json.loads((tmp_path / "stage1/training.json").read_text())
    assert first == json.loads((id_run / "metrics.json").read_text()) and "continued_from" not in first
    # no local path of the training machine ships in the configs
    assert not any("_name_or_path" in json.loads(p.read_text()) for p in (tmp_path / "stage1").rglob("*.json"))

    # a run that continued stage 1 (model.init) and is exported over it: stage 1's record is kept inside
    continued = tmp_path / "continued"
    shutil.copytree(id_run, continued, ignore=shutil.ignore_patterns("checkpoint-*", "logs"))
    config = yaml.safe_load((continued / "config.yaml").read_text())
    config["model"]["init"] = str(tmp_path / "stage1")
    (continued / "config.yaml").write_text(yaml.safe_dump(config))
    export(continued, tmp_path / "stage1")
    record = json.loads((tmp_path / "stage1/training.json").read_text())
    assert record["continued_from"] == first and record["steps"] == first["steps"]


# ---------------------------------------------------------------- optim.id_loss_weight
def test_id_loss_weight_zero_is_the_run_without_it(id_run, people, vae_run, tokenizer_dir, tmp_path):
    """Weight 0 (the default) builds no recogniser and trains exactly as before the option existed:
    the same log, byte for byte, and the same weights files."""
    out = tmp_path / "weight0"
    launch(id_model_args(out, people, vae_run / "vae", tokenizer_dir) + ["optim.id_loss_weight=0"])
    assert (out / "log.jsonl").read_bytes() == (id_run / "log.jsonl").read_bytes()
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (out / part).read_bytes() == (id_run / part).read_bytes()


def test_id_loss_run_logs_its_term_and_resumes_exactly(people, vae_run, tokenizer_dir, tmp_path):
    """With the identity loss on (the shipped MobileFaceNet, flip-summed vectors): every step logs the
    term and the mean cosine (log.jsonl and tensorboard), the term is part of the loss, and a run resumed
    from its step-2 checkpoint ends like the uninterrupted one (the recogniser is rebuilt, not saved)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def args(out):
        return id_model_args(out, people, vae_run / "vae", tokenizer_dir) + [
            "data.recognizer=mobilefacenet", "data.recognizer_flip=true",
            f"data.identity_cache={tmp_path / 'mobilefacenet.safetensors'}", "optim.cfg_dropout=0",
            "optim.id_loss_weight=0.5", "optim.id_loss_max_timestep=1000"]

    run = tmp_path / "idloss"
    launch(args(run))
    records = log(run)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:   # every example takes part (no dropout, every timestep): λ·(1 − mean cosine)
        assert 0 < record["id_loss"] < record["loss"] and -1 <= record["id_cosine"] <= 1
        assert record["id_loss"] == pytest.approx(0.5 * (1 - record["id_cosine"]), abs=1e-5)
    events = EventAccumulator(str(run / "logs" / "idgen"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/id_cosine")] == [1, 2, 3]
    assert events.Scalars("train/id_loss")[0].value == pytest.approx(records[0]["id_loss"])
    assert not any("recogn" in p.name.lower() for p in (run / "checkpoint-2").iterdir())

    out = tmp_path / "resumed"
    resume(run, out, args(out))
    assert abs(losses(out)[3] - losses(run)[3]) <= 1e-6
    assert abs(log(out)[-1]["id_cosine"] - records[-1]["id_cosine"]) <= 1e-6
    assert_same_weights(run / "unet/diffusion_pytorch_model.safetensors", out / "unet/diffusion_pytorch_model.safetensors")
