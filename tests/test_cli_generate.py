"""``idgen generate`` on tiny random models: files written, progress printed, one-line failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from idgen.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny matrices run fastest on one thread


def test_generate_writes_images_and_similarities(faces_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--face", str(faces_dir / "Aaron_Peirsol_0001.jpg"), "--output-dir", str(out), "--tiny",
                 "--count", "2", "--steps", "2", "--seed", "7"])
    assert code == 0
    record = json.loads((out / "similarities.json").read_text())
    assert record["source"] == "Aaron_Peirsol_0001.jpg" and record["style"] == "arc2face"
    assert [r["seed"] for r in record["images"]] == [7, 8]
    for r in record["images"]:
        assert Image.open(out / r["file"]).size == (32, 32)
    printed = capsys.readouterr()
    assert "image_001.png" in printed.out and "arc2face: 2 image(s)" in printed.err  # tqdm bar on stderr
    # A random identity needs no photo.
    again = tmp_path / "again"
    assert main(["generate", "--random-identity", "--output-dir", str(again), "--tiny", "--count", "1", "--steps", "2"]) == 0
    assert (again / "image_000.png").is_file()


@pytest.mark.parametrize("make, extra, expected", [
    ("blank.png", [], "No face"),
    ("notes.txt", [], "notes.txt"),
    (None, ["--prompt", "a watercolour"], "InstantID"),
])
def test_failures_are_one_line(faces_dir, tmp_path, capsys, make, extra, expected):
    if make == "blank.png":
        photo = tmp_path / make
        Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(photo)
    elif make == "notes.txt":
        photo = tmp_path / make
        photo.write_text("not an image")
    else:
        photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    code = main(["generate", "--face", str(photo), "--output-dir", str(tmp_path / "out"), "--tiny", "--count", "1",
                 "--steps", "1", *extra])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
    assert len(lines) == 1 and expected.lower() in lines[0].lower()
    assert not (tmp_path / "out" / "image_000.png").exists()


def test_generate_with_the_infiniteyou_style(faces_dir, tmp_path, capsys, monkeypatch):
    """--style infiniteyou --tiny: a prompt and a pose photo, the images those settings give when the
    tiny pipeline is called directly, and a one-line error naming what to download when it is not configured."""
    import torch

    from idgen.application import ModelHub, ModelSettings

    monkeypatch.delenv("IDGEN_INFINITEYOU", raising=False)
    photo, pose = faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Abdullah_Gul_0001.jpg"
    out = tmp_path / "out"
    assert main(["generate", "--face", str(photo), "--style", "infiniteyou", "--tiny", "--prompt", "a watercolour",
                 "--pose", str(pose), "--count", "2", "--steps", "2", "--seed", "3", "--output-dir", str(out)]) == 0
    record = json.loads((out / "similarities.json").read_text())
    assert record["style"] == "infiniteyou" and [r["seed"] for r in record["images"]] == [3, 4]
    assert "infiniteyou: 2 image(s)" in capsys.readouterr().err

    hub = ModelHub(ModelSettings(tiny=True))
    face = hub.analyzer().get_face(photo)
    unit = torch.nn.functional.normalize(torch.from_numpy(face.normed_embedding).float(), dim=0)
    expected = hub.infiniteyou()("a watercolour", id_embeds=unit[None], pose_image=str(pose), num_inference_steps=2,
                                 num_images_per_prompt=2,
                                 generator=[torch.Generator().manual_seed(3 + k) for k in range(2)]).images
    for r, image in zip(record["images"], expected):
        assert np.array_equal(np.asarray(Image.open(out / r["file"])), np.asarray(image))
    assert np.asarray(expected[0]).shape == (32, 32, 3)

    for extra, reason in ((["--negative-prompt", "blurry", "--tiny"], "no negative prompt"),
                          ([], "InfiniteYou is not configured: download ByteDance/InfiniteYou"),
                          (["--fast", "--tiny"], "InfiniteYou has none")):
        assert main(["generate", "--random-identity", "--style", "infiniteyou", "--count", "1", "--steps", "1",
                     "--detector", "dlib", "--recognizer", "dlib", "--output-dir", str(tmp_path / "bad"), *extra]) == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
        assert len(lines) == 1 and reason in lines[0], (extra, lines)
    assert not (tmp_path / "bad").exists()


def test_fast_is_refused_up_front_when_its_lcm_lora_is_not_here(tmp_path, capsys, monkeypatch):
    """--fast without the LCM-LoRA on this machine: one line naming the download and the flag, before
    any model or photo is loaded (no traceback, no network)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for extra, reason in ((["--model", str(tmp_path / "saved")], "`hf download latent-consistency/lcm-lora-sdv1-5`"),
                          (["--model", "mini"], "does not fit the embedded mini model"),
                          (["--tiny", "--lcm-lora", str(tmp_path)], f"--lcm-lora {tmp_path}: no LoRA weights"),
                          (["--tiny", "--lcm-lora", str(tmp_path / "missing")], "missing: no LoRA weights")):
        code = main(["generate", "--face", str(tmp_path / "not-read.jpg"), "--fast", "--output-dir", str(tmp_path / "out"),
                     *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("idgen: error:")]
        assert code == 1 and len(lines) == 1 and reason in lines[0], (extra, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_generate_prints_one_progress_bar_and_no_future_warning(tmp_path):
    """A new user's first command (the embedded mini model, loaded with from_pretrained): idgen's own bar
    only (no pipeline-loading, weight-loading or denoising bars nested in it), and no deprecation noise."""
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-m", "idgen.cli", "generate", "--model", "mini", "--random-identity",
                           "--count", "1", "--steps", "2", "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "FutureWarning" not in done.stderr and "Warning" not in done.stderr, done.stderr
    bars = [s.strip() for s in re.split(r"[\r\n]", done.stderr) if re.search(r"\|\s*\d+/\d+ \[", s)]
    assert bars and all(bar.startswith("arc2face: 1 image(s):") for bar in bars), bars
    assert bars[-1].startswith("arc2face: 1 image(s): 100%")


def _generate(out, *extra):
    return main(["generate", "--random-identity", "--output-dir", str(out), "--tiny", "--steps", "1", *extra])


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_replaces_its_own_images_and_nothing_else(tmp_path):
    """3 images, then 1 into the same folder: the two earlier images it does not write again are gone
    (no stale image_001/002 beside the new one), a file someone added stays, no hidden leftovers."""
    out = tmp_path / "out"
    assert _generate(out, "--count", "3") == 0
    (out / "notes.txt").write_text("mine")
    assert _generate(out, "--count", "1", "--seed", "5") == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_000.png", "notes.txt", "similarities.json"]
    record = json.loads((out / "similarities.json").read_text())
    assert [(r["file"], r["seed"]) for r in record["images"]] == [("image_000.png", 5)]


@pytest.mark.parametrize("make, expected", [
    ("folder", "is not empty and holds no earlier output of this command (it holds 'image_001.png' and 1 more); "
               "give --output-dir a new or empty folder"),
    ("file", "is a file, not a folder; give --output-dir a new or empty folder"),
    ("read-only", "(--output-dir): Read-only file system; the file system is read-only: write elsewhere"),
])
def test_an_unusable_out_is_refused_before_any_image_is_made(tmp_path, capsys, monkeypatch, make, expected):
    """Someone else's images, a file, a read-only folder: one line naming --output-dir, exit 1, nothing
    generated and nothing there changed."""
    import errno
    import tempfile

    from idgen.application import actions

    out = tmp_path / "out"
    if make == "folder":
        out.mkdir()
        (out / "image_001.png").write_bytes(b"their picture")
        (out / "notes.txt").write_text("theirs")
    elif make == "file":
        out.write_text("a file")
    else:
        out.mkdir()

        def read_only(*args, dir=None, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", dir)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)

    def never(*args, **kwargs):
        raise AssertionError("generated before --output-dir was checked")

    monkeypatch.setattr(actions, "generate_images", never)
    before = out.read_bytes() if out.is_file() else _files(out)
    assert _generate(out, "--count", "1") == 1
    [line] = _error_lines(capsys)
    assert line.startswith(f"idgen: error: {'cannot write to ' if make == 'read-only' else ''}{out} {expected}")
    assert (out.read_bytes() if out.is_file() else _files(out)) == before


def test_a_full_disk_while_saving_leaves_the_earlier_output_as_it_was(tmp_path, capsys, monkeypatch):
    """The disk fills after the new images are staged: one line naming the file and the fix, the
    earlier run's images and record unchanged, no hidden staging folder left."""
    import errno

    import idgen.cli.generate

    out = tmp_path / "out"
    assert _generate(out, "--count", "2") == 0
    before = _files(out)

    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(idgen.cli.generate, "write_json_atomic", disk_full)
    assert _generate(out, "--count", "1", "--seed", "9") == 1
    [line] = _error_lines(capsys)
    assert line.startswith("idgen: error: ") and "similarities.json: No space left on device; the disk is full" in line
    assert line.endswith("run the same command again")
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
