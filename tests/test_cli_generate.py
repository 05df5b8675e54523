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
    code = main(["generate", "--face", str(faces_dir / "Aaron_Peirsol_0001.jpg"), "--out", str(out), "--tiny",
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
    assert main(["generate", "--random-identity", "--out", str(again), "--tiny", "--count", "1", "--steps", "2"]) == 0
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
    code = main(["generate", "--face", str(photo), "--out", str(tmp_path / "out"), "--tiny", "--count", "1",
                 "--steps", "1", *extra])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
    assert len(lines) == 1 and expected.lower() in lines[0].lower()
    assert not (tmp_path / "out" / "image_000.png").exists()
