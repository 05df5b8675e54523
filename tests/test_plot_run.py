"""training/plot_run.py reads what a run logged and draws it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("tensorboard")
ROOT = Path(__file__).resolve().parents[1]


def fake_run(folder: Path, steps: int, validation: dict[int, float]) -> Path:
    """A run folder as training/train.py leaves it: log.jsonl and a TensorBoard log with val/ scalars."""
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir()
    (folder / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "examples": []}) + "\n"
                                              for s in range(1, steps + 1)))
    writer = SummaryWriter(str(folder / "logs" / "idgen"))
    for step, value in validation.items():
        writer.add_scalar("val/face_detected", value, step)
        writer.add_scalar("train/loss", 0.5, step)   # not a validation metric: not plotted
    writer.close()
    return folder


def test_reads_the_loss_and_every_validation_metric(tmp_path):
    sys.path.insert(0, str(ROOT / "training"))
    try:
        from plot_run import read_run, smooth
    finally:
        sys.path.remove(str(ROOT / "training"))
    run = fake_run(tmp_path / "run", 6, {2: 0.25, 4: 0.5, 6: 0.75})
    losses, metrics = read_run(run)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6] and losses[1][1] == pytest.approx(0.5)
    assert list(metrics) == ["val/face_detected"]
    assert metrics["val/face_detected"] == [(2, pytest.approx(0.25)), (4, pytest.approx(0.5)), (6, pytest.approx(0.75))]
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_draws_a_run_and_its_continuation_in_one_png(tmp_path):
    first = fake_run(tmp_path / "first", 4, {4: 0.5})
    second = fake_run(tmp_path / "second", 4, {2: 0.6, 4: 0.7})
    out = tmp_path / "curve.png"
    result = subprocess.run([sys.executable, str(ROOT / "training/plot_run.py"), str(first), str(second),
                             "--offset", "0", "4", "--output-file", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 2 * image.height   # the loss and one metric side by side
    bad = subprocess.run([sys.executable, str(ROOT / "training/plot_run.py"), str(first), str(second),
                          "--offset", "0", "--output-file", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "one --offset" in bad.stderr
