"""``idgen doctor``: which model files are on the machine, from a fake hub cache and local folders."""

from __future__ import annotations

import pytest
from hub_cache import COMMIT, cache_file

from idgen.application.doctor import ARC2FACE_FILES, PARAMETERS, SD15_FILES
from idgen.cli import main

ARC2FACE, BASE = "FoivosPar/Arc2Face", "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: Sizes above each weights file's floor (parameters × 2 bytes); the files are sparse.
SIZES = {"arc2face/diffusion_pytorch_model.safetensors": PARAMETERS["sd15_unet"] * 2,
         "encoder/pytorch_model.bin": PARAMETERS["clip_l_text"] * 2,
         "vae/diffusion_pytorch_model.safetensors": PARAMETERS["sd_vae"] * 2}


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """An empty hub cache and insightface root; no IDGEN_* model variables."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("IDGEN_INSIGHTFACE_ROOT", str(tmp_path / "insightface"))
    for name in ("IDGEN_MODEL", "IDGEN_BASE", "IDGEN_ARC2FACE", "IDGEN_INSTANTID", "IDGEN_INFINITEYOU", "IDGEN_TINY"):
        monkeypatch.delenv(name, raising=False)
    return cache, tmp_path / "insightface" / "models" / "antelopev2"


def doctor(capsys) -> tuple[int, str]:
    code = main(["doctor"])
    return code, capsys.readouterr().out


def download_arc2face(cache):
    for name in SD15_FILES:
        cache_file(cache, BASE, name, SIZES.get(name, 2))
    for name in ARC2FACE_FILES:
        cache_file(cache, ARC2FACE, name, SIZES.get(name, 2))


def test_nothing_downloaded_names_every_family_and_the_command_that_gets_it(machine, capsys):
    code, out = doctor(capsys)
    assert code == 1
    assert out.splitlines()[0].startswith("idgen generate and idgen dataset generate run: the embedded mini model")
    assert "embedded mini model: present" in out
    for family in ("Arc2Face", "face analysis for Arc2Face and InstantID", "InstantID", "InfiniteYou",
                   "LCM-LoRA fast preset"):
        assert f"\n{family}: not on this machine" in out
    assert f"hf download {ARC2FACE} {' '.join(ARC2FACE_FILES)}\n" in out
    assert f"hf download {BASE} {' '.join(SD15_FILES)}\n" in out
    pack = machine[1]
    assert f"hf download DIAMONIK7777/antelopev2 scrfd_10g_bnkps.onnx glintr100.onnx --local-dir {pack}\n" in out
    assert f"hf download {ARC2FACE} arcface.onnx --local-dir {pack}\n" in out
    assert 'hf download ByteDance/InfiniteYou --include "infu_flux_v1.0/aes_stage2/*"' in out
    assert "hf download latent-consistency/lcm-lora-sdv1-5 pytorch_lora_weights.safetensors" in out


def test_downloaded_arc2face_is_present_and_runs(machine, capsys):
    cache, pack = machine
    download_arc2face(cache)
    pack.mkdir(parents=True)
    for name in ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "arcface.onnx"):
        with open(pack / name, "wb") as handle:
            handle.truncate(5 << 20)
    code, out = doctor(capsys)
    assert code == 1                       # InstantID, InfiniteYou and the LCM-LoRAs are still missing
    assert out.splitlines()[0] == f"idgen generate and idgen dataset generate run: Arc2Face {ARC2FACE} on {BASE}"
    assert "\nArc2Face: present" in out and "\nface analysis for Arc2Face and InstantID: present" in out
    assert f"hf download {ARC2FACE} arc2face" not in out and "antelopev2 scrfd" not in out


def test_a_partial_download_lists_what_is_missing_or_broken(machine, capsys):
    """A git-lfs pointer (what `git clone` without git-lfs leaves) is not a weights file; a missing
    file is listed by name, and only the broken files of a family are."""
    cache, pack = machine
    download_arc2face(cache)
    cache_file(cache, ARC2FACE, "arc2face/diffusion_pytorch_model.safetensors", 134)
    (cache / "models--FoivosPar--Arc2Face" / "snapshots" / COMMIT / "encoder" / "pytorch_model.bin").unlink()
    pack.mkdir(parents=True)
    with open(pack / "scrfd_10g_bnkps.onnx", "wb") as handle:
        handle.truncate(5 << 20)
    code, out = doctor(capsys)
    assert code == 1
    assert "\nArc2Face: 2 of 12 files missing or broken" in out
    assert (f"  {ARC2FACE}: arc2face/diffusion_pytorch_model.safetensors: 134 bytes, expected at least 1.60 GiB: "
            "a git-lfs pointer or a cut-off download") in out
    assert f"  {ARC2FACE}: encoder/pytorch_model.bin: missing" in out
    assert "vae/diffusion_pytorch_model.safetensors" not in out.split("\nArc2Face:")[1].split("get it with")[0]
    assert "\nface analysis for Arc2Face and InstantID: 2 of 3 files missing or broken" in out
    assert f"  {pack}: glintr100.onnx: missing" in out and "scrfd_10g_bnkps.onnx: missing" not in out
    # the default Arc2Face is not complete, but its presence check (model_index.json, arc2face/config.json)
    # is what chooses the model: doctor says so on its first line
    assert out.splitlines()[0].endswith(f"Arc2Face {ARC2FACE} on {BASE}")


def test_a_folder_setting_is_checked_there_and_downloaded_into_it(machine, monkeypatch, tmp_path, capsys):
    folder = tmp_path / "my-arc2face"
    (folder / "arc2face").mkdir(parents=True)
    (folder / "arc2face" / "config.json").write_text("{}")
    monkeypatch.setenv("IDGEN_ARC2FACE", str(folder))
    code, out = doctor(capsys)
    assert f"  {folder}: arc2face/diffusion_pytorch_model.safetensors: missing" in out
    assert f"  {folder}: arc2face/config.json" not in out
    assert f"hf download {ARC2FACE} {' '.join(ARC2FACE_FILES)} --local-dir {folder}\n" in out


def test_doctor_loads_no_model(machine, monkeypatch, capsys):
    """File lookups only: loading any checkpoint would fail here."""
    import diffusers

    def refuse(*args, **kwargs):
        raise AssertionError("doctor loaded a model")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", refuse)
    download_arc2face(machine[0])
    assert doctor(capsys)[0] == 1


def test_the_base_files_doctor_asks_for_are_all_arc2face_loads(machine, tmp_path):
    """Offline, ``from_arc2face`` loads from a cache holding only the SD 1.5 files of SD15_FILES (the
    tokenizer in the tiny model's own file names): the base's UNet and text encoder, which the
    download commands leave out, are never read."""
    import shutil

    from idgen.pipelines import Arc2FacePipeline
    from idgen.testing import tiny_arc2face

    cache = machine[0]
    pipe = tiny_arc2face()
    pipe.save_pretrained(tmp_path / "saved")
    pipe.unet.save_pretrained(tmp_path / "arc2face" / "arc2face")
    pipe.text_encoder.save_pretrained(tmp_path / "arc2face" / "encoder")
    for repo, folder in ((BASE, tmp_path / "saved"), (ARC2FACE, tmp_path / "arc2face")):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            if repo == ARC2FACE or name in SD15_FILES or name.startswith("tokenizer/"):
                shutil.copy(path, cache_file(cache, repo, name).resolve())
    base = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots" / COMMIT
    assert not (base / "unet").exists() and not (base / "text_encoder").exists()
    loaded = Arc2FacePipeline.from_arc2face(BASE, ARC2FACE)
    assert loaded.unet.config.sample_size == pipe.unet.config.sample_size and loaded.safety_checker is None
