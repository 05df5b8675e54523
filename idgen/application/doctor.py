"""``idgen doctor``: which model files are on this machine, and the command that gets each missing one.

Offline and fast: every check is a file lookup (a local folder, or the hub cache through
:func:`~idgen.application.hub.local_file`) and a size floor; no model is loaded. A weights
file below its floor is reported as broken, not present: a git-lfs pointer (a ~130-byte text
file, what ``git clone`` without git-lfs leaves) or a copy cut short. The floors are the parameter
count × 2 bytes (fp16/bf16, the smallest precision these checkpoints are published in) where the
architecture is known (counted on the meta device: ``tests/test_sd15_architecture.py`` and the
Results page's InstantID and InfiniteYou tables), else 1 MiB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .hub import ENVIRONMENT, ModelSettings, local_file

#: The floor of a weights file whose parameter count is not known here.
MIN_WEIGHTS_BYTES = 1 << 20
#: Parameter counts of the published parts (see the module docstring for where each comes from).
PARAMETERS = {"sd15_unet": 859_520_964, "clip_l_text": 123_060_480, "sd_vae": 83_653_863,
              "identitynet": 1_251_014_160, "instantid_adapter": 422_765_824, "infiniteyou_projection": 84_595_968}

#: The files of the SD 1.5 base that Arc2Face uses (its UNet and text encoder come from Arc2Face).
SD15_FILES = ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/merges.txt",
              "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
ARC2FACE_FILES = ("arc2face/config.json", "arc2face/diffusion_pytorch_model.safetensors", "encoder/config.json",
                  "encoder/pytorch_model.bin")
#: The antelopev2 files idgen reads (the detector and InstantID's recogniser), from a mirror of the pack.
ANTELOPEV2_MIRROR, ANTELOPEV2_FILES = "DIAMONIK7777/antelopev2", ("scrfd_10g_bnkps.onnx", "glintr100.onnx")
#: SDXL and FLUX.1-dev: their configs, tokenizers and the diffusers-layout weights, not the single-file checkpoints.
SDXL_INCLUDE = ("*.json", "*.txt", "*/model.safetensors", "*/diffusion_pytorch_model.safetensors")
FLUX_EXCLUDE = ("flux1-dev.safetensors", "ae.safetensors")


@dataclass(frozen=True)
class Need:
    """One file a model family reads: ``name`` inside ``where`` (a hub id or a folder)."""

    where: str
    name: str
    min_bytes: int = 1


@dataclass(frozen=True)
class Family:
    """A model family: what it is for, the files it reads and the commands that download them."""

    title: str
    purpose: str
    needs: tuple[Need, ...]
    commands: tuple[str, ...]


@dataclass(frozen=True)
class FileState:
    need: Need
    path: Optional[str]      # where it was found
    size: int = 0

    @property
    def problem(self) -> Optional[str]:
        """``None`` when the file is there and big enough, else what is wrong with it."""
        if self.path is None:
            return "missing"
        if self.size < self.need.min_bytes:
            return (f"{self.size:,} bytes, expected at least {_size(self.need.min_bytes)}: a git-lfs pointer "
                    "or a cut-off download")
        return None


def _size(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _fp16(part: str) -> int:
    return PARAMETERS[part] * 2


def _download(repo: str, where: str, files: tuple[str, ...] = (), include: tuple[str, ...] = (),
              exclude: tuple[str, ...] = ()) -> str:
    """The ``hf download`` command that puts ``files`` (or the ``include`` patterns) of the published
    hub repo ``repo`` where the setting ``where`` looks: into that folder when it names one, else
    into the hub cache of the hub id it names."""
    folder = os.path.isdir(where) or where.startswith(("/", ".", "~"))
    words = ["hf download", repo if folder else where, *files, *(f'--include "{p}"' for p in include),
             *(f'--exclude "{p}"' for p in exclude)]
    if folder:
        words.append(f"--local-dir {where}")
    return " ".join(words)


def families(settings: ModelSettings) -> list[Family]:
    """The model families idgen can use, with the files each reads where ``settings`` look for them
    (the ``IDGEN_*`` variables and flags; InstantID and InfiniteYou at their published hub ids
    when unset)."""
    from ..faces.model_files import insightface_pack_dir
    from ..pipelines.mini import MINI_MODEL_DIR

    mini = str(MINI_MODEL_DIR)
    base, arc2face = settings.base, settings.arc2face
    pack = str(insightface_pack_dir("antelopev2", settings.insightface_root))
    instantid = settings.instantid or "InstantX/InstantID"
    sdxl = settings.instantid_base
    infiniteyou = settings.infiniteyou or "ByteDance/InfiniteYou"
    flux = settings.infiniteyou_base
    variant = f"infu_flux_v1.0/{settings.infiniteyou_variant}"
    weights = {"vae/diffusion_pytorch_model.safetensors": _fp16("sd_vae"),
               "arc2face/diffusion_pytorch_model.safetensors": _fp16("sd15_unet"),
               "encoder/pytorch_model.bin": _fp16("clip_l_text")}
    return [
        Family("embedded mini model", "offline generation (64×64 faces); ships inside idgen",
               tuple(Need(mini, name, MIN_WEIGHTS_BYTES if name.endswith(".safetensors") else 1)
                     for name in ("model_index.json", "unet/diffusion_pytorch_model.safetensors",
                                  "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors")),
               ("pip install --force-reinstall idgen",)),
        Family("Arc2Face", f"generate/edit/dataset with {arc2face} on the SD 1.5 base {base}",
               tuple(Need(base, name, weights.get(name, 1)) for name in SD15_FILES)
               + tuple(Need(arc2face, name, weights.get(name, 1)) for name in ARC2FACE_FILES),
               (_download(ENVIRONMENT["arc2face"][1], arc2face, ARC2FACE_FILES),
                _download(ENVIRONMENT["base"][1], base, SD15_FILES))),
        Family("face analysis for Arc2Face and InstantID",
               f"insightface antelopev2 with Arc2Face's arcface.onnx, in {pack}",
               tuple(Need(pack, name, MIN_WEIGHTS_BYTES) for name in (*ANTELOPEV2_FILES, "arcface.onnx")),
               (_download(ANTELOPEV2_MIRROR, pack, ANTELOPEV2_FILES),
                _download(ENVIRONMENT["arc2face"][1], pack, ("arcface.onnx",)))),
        Family("InstantID", f"--instantid {instantid} on the SDXL base {sdxl}",
               (Need(instantid, "ControlNetModel/config.json"),
                Need(instantid, "ControlNetModel/diffusion_pytorch_model.safetensors", _fp16("identitynet")),
                Need(instantid, "ip-adapter.bin", _fp16("instantid_adapter")),
                Need(sdxl, "model_index.json"), Need(sdxl, "unet/config.json")),
               (_download("InstantX/InstantID", instantid, ("ControlNetModel/config.json",
                          "ControlNetModel/diffusion_pytorch_model.safetensors", "ip-adapter.bin")),
                _download(ENVIRONMENT["instantid_base"][1], sdxl, include=SDXL_INCLUDE))),
        Family("InfiniteYou", f"--infiniteyou {infiniteyou} ({settings.infiniteyou_variant}) on {flux}",
               (Need(infiniteyou, f"{variant}/InfuseNetModel/config.json"),
                Need(infiniteyou, f"{variant}/image_proj_model.bin", _fp16("infiniteyou_projection")),
                Need(flux, "model_index.json"), Need(flux, "transformer/config.json")),
               (_download("ByteDance/InfiniteYou", infiniteyou, include=(f"{variant}/*",)),
                "hf auth login   # FLUX.1-dev is gated: accept its licence on its model page first",
                _download(ENVIRONMENT["infiniteyou_base"][1], flux, exclude=FLUX_EXCLUDE))),
        Family("LCM-LoRA fast preset", "the fast preset (--fast) for Arc2Face (SD 1.5) and InstantID (SDXL)",
               tuple(Need(lora, "pytorch_lora_weights.safetensors", MIN_WEIGHTS_BYTES)
                     for lora in (settings.lcm_lora, settings.lcm_lora_sdxl) if lora),
               tuple(_download(ENVIRONMENT[name][1], getattr(settings, name), ("pytorch_lora_weights.safetensors",))
                     for name in ("lcm_lora", "lcm_lora_sdxl") if getattr(settings, name))),
    ]


def check(family: Family) -> list[FileState]:
    """Each file of ``family``: where it is and its size (file lookups only)."""
    states = []
    for need in family.needs:
        path = local_file(need.where, need.name)
        states.append(FileState(need, path, os.path.getsize(path) if path else 0))
    return states


def report(settings: ModelSettings) -> tuple[str, bool]:
    """The text ``idgen doctor`` prints, and whether every family is complete."""
    from huggingface_hub import constants

    lines = [f"idgen generate and idgen dataset generate run: {settings.describe()}",
             f"(hub cache: {constants.HF_HUB_CACHE}; insightface root: {settings.insightface_root})", ""]
    complete = True
    for family in families(settings):
        states = check(family)
        broken = [state for state in states if state.problem]
        complete &= not broken
        if not broken:
            verdict = "present"
        elif all(state.path is None for state in states):
            verdict = "not on this machine"
        else:
            verdict = f"{len(broken)} of {len(states)} files missing or broken"
        lines.append(f"{family.title}: {verdict} — {family.purpose}")
        if broken and len(broken) < len(states) or any(state.path for state in broken):
            lines += [f"  {state.need.where}: {state.need.name}: {state.problem}" for state in broken]
        if broken:
            lines += ["  get it with:", *(f"    {command}" for command in family.commands)]
    return "\n".join(lines), complete
