"""The idgen command line: help, embed with bad files, one-line errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

from idgen.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "embed" in out and "eval" in out
    for command in build_parser()._subparsers._group_actions[0].choices.values():
        assert command.format_help()


def test_embed_folder_reports_skipped_files(tmp_path, faces_dir, dlib_analyzer):
    photos = tmp_path / "photos"
    shutil.copytree(faces_dir, photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.full((200, 200, 3), 80, np.uint8)).save(photos / "wall.png")
    out = tmp_path / "emb.safetensors"
    done = subprocess.run([sys.executable, "-m", "idgen.cli", "embed", str(photos), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    index = json.loads(out.with_suffix(".json").read_text())
    tensors = load_file(str(out))
    assert len(index["files"]) == 5 == tensors["embeddings"].shape[0]
    assert tensors["normed"].shape == (5, 128)
    reasons = {s["file"]: s["reason"] for s in index["skipped"]}
    assert set(reasons) == {"broken.jpg", "wall.png"}
    assert "not an image file" in reasons["broken.jpg"] and reasons["wall.png"] == "no face found"
    row = index["files"].index("Aaron_Peirsol_0001.jpg")
    expected = dlib_analyzer.get_face(faces_dir / "Aaron_Peirsol_0001.jpg").embedding
    assert np.allclose(tensors["embeddings"][row], expected, atol=1e-5)
    assert "skipped broken.jpg" in done.stderr


def test_errors_are_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "idgen.cli", "embed", str(tmp_path / "nope"), "--out", "x.safetensors"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == f"idgen: error: {tmp_path / 'nope'}: not a folder"
