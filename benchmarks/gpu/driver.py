"""The prepared GPU run: the measurements idgen has no GPU number for, each part time-boxed, one JSON out.

    python benchmarks/gpu/driver.py --output-dir DIR [--budget 480]      # on a GPU (benchmarks/gpu/run.sh)
    python benchmarks/gpu/driver.py --output-dir DIR --dry-run           # every size shrunk, on the CPU

Weights are random, in the published full-size architectures (:mod:`idgen.testing.sd15_architecture`,
:mod:`idgen.testing.flux_architecture`, ``benchmarks/instantid_memory.py``): speed and memory do not
depend on their values, and nothing is downloaded. Each part runs in its own process, killed when
its box of seconds (:data:`PARTS`) or the whole budget runs out, so a slow part cannot starve the
ones after it; a part records each number as soon as it has it (``DIR/parts/NAME.json``), so a
killed part keeps what it measured. ``DIR/gpu_results.json`` gathers every part with its status
(``ok``, ``failed`` with the end of its error, ``timed out``, ``skipped`` with the reason) and is
rewritten after each part. ``--dry-run`` shrinks every model, image and step count so the whole
script runs end to end on a CPU in minutes, its boxes :data:`DRY_RUN_BOX_SCALE` times longer (a loaded
CPU is slow to start up); its numbers measure nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]   # idgen as carried, uninstalled; the other benchmarks

#: SD 1.5 UNet FLOPs per sample and denoising step at 64×64 latents (512²).
UNET_TFLOP_PER_SAMPLE_STEP = 0.677


class Part:
    """What a part function gets: its settings, and ``record`` to keep a number at once."""

    def __init__(self, name: str, out: Path, dry_run: bool):
        self.name, self.out, self.dry_run = name, out, dry_run
        self.path = out / "parts" / f"{name}.json"
        self.results: dict = {}

    def record(self, **values) -> None:
        self.results.update(values)
        write_json(self.path, self.results)
        print(f"[{self.name}] {json.dumps(values, default=str)}", flush=True)

    def device(self):
        """The GPU, or the CPU in a dry run."""
        import torch

        return torch.device("cpu" if self.dry_run else "cuda")

    def other(self, name: str) -> dict:
        """What an earlier part recorded (empty if it recorded nothing)."""
        path = self.out / "parts" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}


# ---------------------------------------------------------------- timing helpers
def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> tuple[float, float | None, object]:
    """Seconds and peak GPU memory (GiB; None on CPU) of one call of ``fn``, and its result."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return seconds, peak, result


def import_pipelines():
    """``idgen.pipelines`` from this working tree when idgen is not installed (pyproject maps it to
    ``pipelines/``): the GPU machine runs the repository as carried, without installing it."""
    try:
        import idgen.pipelines as pipelines
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location("idgen.pipelines", ROOT / "pipelines" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "pipelines")])
        pipelines = importlib.util.module_from_spec(spec)
        sys.modules["idgen.pipelines"] = pipelines
        spec.loader.exec_module(pipelines)
        sys.modules["idgen"].pipelines = pipelines
    return pipelines


# ---------------------------------------------------------------- the parts
def matmul(part: Part) -> None:
    """The device's bf16 matrix-product rate: the denominator of every FLOP fraction."""
    import torch

    device = part.device()
    n = 256 if part.dry_run else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    repeats = 2 if part.dry_run else 20
    seconds, _, _ = timed(lambda: [a @ b for _ in range(repeats)], device)
    part.record(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", side=n,
                bf16_tflops=2 * n**3 * repeats / seconds / 1e12)


SD15_REDUCED = {  # SD 1.5's shape at a fraction of the width, for the dry run
    "unet": {"block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 64, "attention_head_dim": 4},
    "text_encoder": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "projection_dim": 64},
    "vae": {"block_out_channels": [32, 32, 32, 32]},
}


def arc2face(part: Part, dtype):
    """A full-size (dry run: reduced) Arc2Face pipeline with random weights, built on the device."""
    import torch

    from idgen.testing.sd15_architecture import random_sd15_components
    from idgen.testing.tiny_arc2face import letters_tokenizer

    pipelines = import_pipelines()
    with part.device():
        parts = random_sd15_components(**(SD15_REDUCED if part.dry_run else {}))
    pipe = pipelines.Arc2FacePipeline(**parts, tokenizer=letters_tokenizer(), safety_checker=None,
                                      feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generation_settings(part: Part) -> dict:
    size, steps = (64, 3) if part.dry_run else (512, 25)
    return {"size": size, "steps": steps, "identities": 2, "images_per_identity": 1 if part.dry_run else 4}


def measure_generation(part: Part, pipe, key: str, steps: int, guidance: float, flop_rate: float | None) -> None:
    """Record images/s of ``pipe`` (best of two timed calls after a warm-up) and its UNet FLOP share."""
    import torch

    from idgen.identity import random_identities

    s = generation_settings(part)
    ids = random_identities(s["identities"], min(512, pipe.text_encoder.config.hidden_size),
                            generator=torch.Generator().manual_seed(0)).to(part.device())
    images = s["identities"] * s["images_per_identity"]
    run = dict(id_embeds=ids, num_images_per_prompt=s["images_per_identity"], height=s["size"], width=s["size"],
               guidance_scale=guidance, output_type="np")
    warm_up = timed(lambda: pipe(num_inference_steps=1, **run), part.device())[0]   # kernels, allocator, compilation
    seconds = min(timed(lambda: pipe(num_inference_steps=steps, **run), part.device())[0] for _ in range(2))
    cfg = 2 if guidance > 1 else 1
    unet_tflop = images * steps * cfg * UNET_TFLOP_PER_SAMPLE_STEP * (s["size"] / 512) ** 2
    part.record(**{key: {"images_per_s": images / seconds, "seconds": seconds, "images": images, "steps": steps,
                         "guidance": guidance, "size": s["size"], "warm_up_seconds": warm_up,
                         "unet_share_of_bf16_matmul_rate":
                             unet_tflop / seconds / flop_rate if flop_rate and not part.dry_run else None}})


def sd15(part: Part) -> None:
    """Arc2Face (SD 1.5 size) at 512², 25 DPM-Solver++ steps with CFG, bf16 and fp16, SDPA, eager."""
    import torch

    rate = part.other("matmul").get("bf16_tflops")
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        pipe = arc2face(part, dtype)
        processors = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
        part.record(attention=processors, flop_denominator="bf16 matmul rate of the matmul part (TFLOP/s)")
        measure_generation(part, pipe, name, generation_settings(part)["steps"], 3.0, rate)
        del pipe


def sd15_compiled(part: Part) -> None:
    """As ``sd15`` in bf16, with the UNet under ``torch.compile`` (the warm-up call, which compiles, is
    timed apart)."""
    import torch

    pipe = arc2face(part, torch.bfloat16)
    pipe.compile_unet(**({"backend": "eager"} if part.dry_run else {}))   # the dry run traces, compiles nothing
    measure_generation(part, pipe, "bf16_compiled", generation_settings(part)["steps"], 3.0,
                       part.other("matmul").get("bf16_tflops"))


def lcm(part: Part) -> None:
    """4 LCM steps without CFG (guidance 1, as an LCM-LoRA is run), bf16: the fast preset's speed."""
    import torch
    from diffusers import LCMScheduler

    pipe = arc2face(part, torch.bfloat16)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    measure_generation(part, pipe, "lcm_4_steps_bf16", 4, 1.0, part.other("matmul").get("bf16_tflops"))


def engine(part: Part) -> None:
    """The dataset engine against the naive loop (``benchmarks/synth_throughput.py``) on the SD 1.5-size
    Arc2Face generator, bf16. The filter is off: random weights draw no faces, and the GPU machine
    has no dlib; the engine's worker still writes every image while the next batch is generated."""
    import tempfile

    import torch
    from synth_throughput import Timer, naive_loop

    from idgen.synth import SynthConfig
    from idgen.synth.consistency import KeepAll
    from idgen.synth.engine import DatasetEngine
    from idgen.synth.generators import Arc2FaceGenerator
    from idgen.synth.identities import sample_identities
    from idgen.synth.journal import Journal

    pipe = arc2face(part, torch.bfloat16)
    identities, per_identity = (2, 2) if part.dry_run else (8, 4)
    steps, size = (2, 64) if part.dry_run else (10, 512)
    call = dict(num_inference_steps=steps, guidance_scale=3.0, height=size, width=size)
    engine_generator = Arc2FaceGenerator(pipe, **call)
    naive_generator = Arc2FaceGenerator(pipe, micro_batch=per_identity, **call)
    dim = min(512, pipe.text_encoder.config.hidden_size)
    part.record(setup={"identities": identities, "images_per_identity": per_identity, "steps": steps, "size": size,
                       "filter": "off (random weights draw no faces)"})
    engine_generator(torch.randn(1, dim), [torch.Generator().manual_seed(0)])   # warm-up
    for mode in ("naive", "engine"):
        with tempfile.TemporaryDirectory() as folder:
            config = SynthConfig.from_dict({
                "output_dir": folder, "identities": {"count": identities, "dim": dim},
                "variation": {"images_per_identity": per_identity}, "filter": {"enabled": False},
                "runtime": {"batch_size": 16, "progress": False}, "writers": {"formats": ["imagefolder"]}})
            timer = Timer()
            runner = DatasetEngine(config, timer.wrap("generate", naive_generator if mode == "naive" else engine_generator),
                                   KeepAll())
            runner._write_image = timer.wrap("write", runner._write_image)
            runner.targets, _ = sample_identities(identities, dim, 0.3, seed=0, progress=False)
            start = time.perf_counter()
            if mode == "naive":
                naive_loop(runner, identities, per_identity)
            else:
                journal = Journal(Path(folder) / "journal").open()
                runner.run_shard(journal, set())
                journal.close()
            synchronize(part.device())
            wall = time.perf_counter() - start
            kept = len(list(Path(folder, "images").rglob("*.jpg")))
            part.record(**{mode: {"images_per_s": kept / wall, "images": kept, "seconds": wall,
                                  "generator_busy_share": timer.seconds["generate"] / wall,
                                  "write_seconds": timer.seconds["write"]}})


SDXL_REDUCED = {  # SDXL's shape at a fraction of the width, for the dry run
    "unet": {"block_out_channels": (32, 64, 64), "transformer_layers_per_block": (1, 1, 1),
             "attention_head_dim": (2, 4, 4), "cross_attention_dim": 64,
             "projection_class_embeddings_input_dim": 6 * 256 + 64},
    "vae": {"block_out_channels": (32, 32, 32, 32)},
    "text": {"small": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
             "big": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "projection_dim": 64}},
}


def sdxl(part: Part) -> None:
    """InstantID-size SDXL (UNet + IdentityNet ControlNet, fp16) at 1024²: peak memory and s/image, on
    the GPU and with model CPU offload. Prompt embeddings are given (no tokenizer on the machine), so
    the text encoders are loaded but not run; the face adapter (Resampler + IP layers, 0.8 GiB by
    ``benchmarks/instantid_memory.py``) is left out."""
    import torch
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline
    from instantid_memory import sdxl_unet, sdxl_vae, text_encoders

    device = part.device()
    size, steps = (64, 2) if part.dry_run else (1024, 10)
    for offload in (False, True):
        if offload and device.type != "cuda":
            part.record(offload="not measured: model CPU offload needs a GPU")
            continue
        dtype = torch.float32 if part.dry_run else torch.float16
        torch.set_default_dtype(dtype)
        with device:
            unet = sdxl_unet(**SDXL_REDUCED["unet"] if part.dry_run else {})
            parts = dict(unet=unet, controlnet=ControlNetModel.from_unet(unet),
                         vae=sdxl_vae(**SDXL_REDUCED["vae"] if part.dry_run else {}))
            parts["text_encoder"], parts["text_encoder_2"] = text_encoders(**SDXL_REDUCED["text"] if part.dry_run else {})
        torch.set_default_dtype(torch.float32)
        scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        pipe = StableDiffusionXLControlNetPipeline(**parts, tokenizer=None, tokenizer_2=None, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        if offload:
            pipe.enable_model_cpu_offload(device=device)
        width = parts["unet"].config.cross_attention_dim
        pooled = parts["text_encoder_2"].config.projection_dim
        embeds = dict(prompt_embeds=torch.randn(1, 77, width, dtype=dtype, device=device),
                      pooled_prompt_embeds=torch.randn(1, pooled, dtype=dtype, device=device),
                      negative_prompt_embeds=torch.zeros(1, 77, width, dtype=dtype, device=device),
                      negative_pooled_prompt_embeds=torch.zeros(1, pooled, dtype=dtype, device=device))
        control = torch.rand(1, 3, size, size, dtype=dtype, device=device)
        run = dict(image=control, height=size, width=size, guidance_scale=5.0, output_type="np", **embeds)
        pipe(num_inference_steps=1, **run)
        seconds, peak, _ = timed(lambda: pipe(num_inference_steps=steps, **run), device)
        part.record(**{"offload" if offload else "on_gpu": {"peak_gib": peak, "seconds_per_image": seconds,
                                                              "steps": steps, "size": size}})
        del pipe, parts, unet
        if device.type == "cuda":
            torch.cuda.empty_cache()


FLUX_REDUCED = {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
                "joint_attention_dim": 32, "pooled_projection_dim": 16, "axes_dims_rope": (4, 6, 6)}


def flux(part: Part) -> None:
    """InfiniteYou-size FLUX denoising (FLUX.1-dev transformer + InfuseNet each step, guidance
    embedded, VAE decode) at 1024², bf16 and NF4 (bitsandbytes, every Linear of both models): peak
    memory and s/image. Text encoders are not run (prompt embeddings are random)."""
    import torch

    from idgen.testing.flux_architecture import flux_dev_transformer, flux_vae, infusenet

    device = part.device()
    size, steps = (64, 2) if part.dry_run else (1024, 12)
    for precision in ("bf16", "nf4"):
        torch.set_default_dtype(torch.bfloat16)
        with device:
            transformer = flux_dev_transformer(**(FLUX_REDUCED if part.dry_run else {}))
            controlnet = infusenet(**(dict(FLUX_REDUCED, num_layers=1, num_single_layers=0) if part.dry_run else {}))
            vae = flux_vae(**({"block_out_channels": (32, 32, 32, 32)} if part.dry_run else {}))
        torch.set_default_dtype(torch.float32)
        if precision == "nf4":
            start = time.perf_counter()
            for model in (transformer, controlnet):
                to_nf4(model, device)
            part.record(nf4_quantize_seconds=time.perf_counter() - start)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        weights = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else None

        def image():
            return flux_image(transformer, controlnet, vae, size, steps, device)

        image()
        seconds, peak, _ = timed(image, device)
        part.record(**{precision: {"peak_gib": peak, "weights_gib": weights, "seconds_per_image": seconds,
                                   "steps": steps, "size": size}})
        del transformer, controlnet, vae
        if device.type == "cuda":
            torch.cuda.empty_cache()


def to_nf4(model, device) -> None:
    """Replace every ``nn.Linear`` of ``model`` by bitsandbytes' NF4 ``Linear4bit`` (bf16 compute)."""
    import bitsandbytes as bnb
    import torch

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                              compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
                quantized.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(module, child_name, quantized.to(device))
                del child


def flux_image(transformer, controlnet, vae, size: int, steps: int, device):
    """One image: ``steps`` flow-matching Euler steps of InfuseNet + transformer, then the VAE decode."""
    import torch

    side = size // 16   # 8× VAE, 2×2 patches
    channels = transformer.config.in_channels
    text_width = transformer.config.joint_attention_dim
    dtype = torch.bfloat16
    latents = torch.randn(1, side * side, channels, device=device, dtype=dtype)
    control = torch.randn(1, side * side, channels, device=device, dtype=dtype)
    text = torch.randn(1, 512, text_width, device=device, dtype=dtype)
    pooled = torch.randn(1, transformer.config.pooled_projection_dim, device=device, dtype=dtype)
    img_ids = torch.zeros(side, side, 3, device=device)
    img_ids[..., 1] += torch.arange(side, device=device)[:, None]
    img_ids[..., 2] += torch.arange(side, device=device)[None, :]
    img_ids = img_ids.reshape(-1, 3)
    txt_ids = torch.zeros(512, 3, device=device)
    guidance = torch.full((1,), 3.5, device=device)
    with torch.no_grad():
        for t in torch.linspace(1, 0, steps + 1, device=device)[:-1]:
            timestep = t.expand(1).to(dtype)
            blocks, single = controlnet(hidden_states=latents, controlnet_cond=control, conditioning_scale=1.0,
                                        encoder_hidden_states=text, pooled_projections=pooled, timestep=timestep,
                                        img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)
            velocity = transformer(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                                   timestep=timestep, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                                   controlnet_block_samples=blocks, controlnet_single_block_samples=single,
                                   return_dict=False)[0]
            latents = latents - velocity / steps
        unpacked = latents.reshape(1, side, side, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return vae.decode(unpacked.reshape(1, channels // 4, side * 2, side * 2).to(vae.dtype)).sample


def lora(part: Part) -> None:
    """LoRA training steps/s of the SD 1.5-size UNet at 512² (``benchmarks/train_throughput.py``: rank 16
    on attention, fp16 autocast, AdamW), without and with gradient checkpointing."""
    from train_throughput import measure

    for checkpointing in (False, True):
        result = measure(checkpointing, not part.dry_run, 2 if part.dry_run else 20, 2 if part.dry_run else 8)
        part.record(**{f"checkpointing_{'on' if checkpointing else 'off'}": result})


def mini_training(part: Part) -> None:
    """The embedded mini model's training needs LFW (162 MB), dlib and the step-1 VAE; none of them is
    on the GPU machine and they do not fit the carried 64 MiB beside the wheels."""
    faces = ROOT / "shared" / "data" / "lfw" / "images"
    part.record(skipped=f"{faces} is not on this machine: the embedded model's training needs LFW, dlib and "
                        "its step-1 VAE (see training/configs/mini_lfw64.yaml), which are not carried")


#: Each part and its box of seconds on the GPU (0: whatever the budget has left when it starts).
PARTS = {"matmul": (matmul, 20), "sd15": (sd15, 60), "sd15_compiled": (sd15_compiled, 85), "lcm": (lcm, 30),
         "engine": (engine, 55), "sdxl": (sdxl, 65), "flux": (flux, 100), "lora": (lora, 60),
         "mini_training": (mini_training, 0)}


# ---------------------------------------------------------------- the orchestrator
def run_part(name: str, out: Path, dry_run: bool) -> None:
    """Run one part in this process (the child the orchestrator starts)."""
    part = Part(name, out, dry_run)
    part.record(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if name != "matmul":
        import_pipelines()   # before any idgen module that imports idgen.pipelines
    PARTS[name][0](part)


#: The dry run's boxes are this many times the GPU's.
DRY_RUN_BOX_SCALE = 6


def orchestrate(out: Path, names: list[str], budget: float, scale: float, dry_run: bool) -> dict:
    """Run the parts ``names`` in order, each in a child process killed at the end of its box
    (``scale`` × its seconds in :data:`PARTS`, less what the parts after it need from ``budget``)."""
    deadline = time.monotonic() + budget
    results = {"dry_run": dry_run, "budget_s": budget, "versions": versions(), "parts": {}}
    for index, name in enumerate(names):
        left = deadline - time.monotonic()
        box = PARTS[name][1] * scale or left
        later = scale * sum(PARTS[n][1] for n in names[index + 1:])
        limit = max(0.0, min(box, left - later))
        entry = {"limit_s": round(limit)}
        if limit < 5:
            entry["status"] = "skipped: no time left in the budget"
        else:
            start = time.monotonic()
            child = subprocess.Popen([sys.executable, __file__, "--output-dir", str(out), "--part", name,
                                      *(["--dry-run"] if dry_run else [])], start_new_session=True,
                                     stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
            try:
                _, error = child.communicate(timeout=limit)
                entry["status"] = "ok" if child.returncode == 0 else f"failed (exit {child.returncode})"
                if child.returncode:
                    entry["error"] = error[-1500:]
                    sys.stdout.write(error)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                entry["error"] = child.communicate()[1][-1500:]
                entry["status"] = f"timed out after {limit:.0f} s (what it recorded before is kept)"
            entry["seconds"] = round(time.monotonic() - start, 1)
        path = out / "parts" / f"{name}.json"
        entry["results"] = json.loads(path.read_text()) if path.exists() else {}
        if "skipped" in entry["results"]:
            entry["status"] = f"skipped: {entry['results']['skipped']}"
        results["parts"][name] = entry
        print(f"== {name}: {entry['status']}", flush=True)
        write_json(out / "gpu_results.json", results)
    return results


def versions() -> dict:
    """The versions of the packages the numbers depend on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("torch", "diffusers", "transformers", "accelerate", "bitsandbytes"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True, help="folder for gpu_results.json and parts/")
    parser.add_argument("--budget", type=float, help="seconds for all parts together (default: 480 on the GPU, "
                                                     "the boxes' sum in a dry run)")
    parser.add_argument("--dry-run", action="store_true", help="shrink every size and run on the CPU")
    parser.add_argument("--only", nargs="*", default=[], choices=list(PARTS), help="run just these parts")
    parser.add_argument("--box-scale", type=float, help=f"multiply every part's box (default: 1 on the GPU, "
                                                        f"{DRY_RUN_BOX_SCALE} in a dry run)")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)   # the child process: one part
    args = parser.parse_args()
    out = Path(args.output_dir)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if args.part:
        run_part(args.part, out, args.dry_run)
        return
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no GPU visible to PyTorch; run with --dry-run to check the script on the CPU")
    names = [name for name in PARTS if not args.only or name in args.only]
    scale = args.box_scale or (DRY_RUN_BOX_SCALE if args.dry_run else 1)
    budget = args.budget or (480 if not args.dry_run else scale * sum(PARTS[name][1] for name in names) + 60)
    results = orchestrate(out, names, budget, scale, args.dry_run)
    failed = [name for name, entry in results["parts"].items() if entry["status"] not in ("ok",)
              and not entry["status"].startswith("skipped")]
    print(f"results: {out / 'gpu_results.json'}; parts not ok: {failed or 'none'}")


if __name__ == "__main__":
    main()
