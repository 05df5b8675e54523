"""The prepared GPU script (benchmarks/gpu/), checked on the CPU: its parts are time-boxed, and its
dry run (every size shrunk) goes end to end. Nothing here needs a GPU, and nothing here measures one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "benchmarks" / "gpu" / "driver.py"


def test_a_part_past_its_box_is_killed_keeping_what_it_recorded_and_the_next_part_runs(tmp_path):
    """Boxes at a tenth of the GPU's: sd15 (6 s) cannot build and run its pipelines in that time on a
    CPU; it is killed, its first record (``started``) stays, and the part after it still runs."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(DRIVER), "--output-dir", str(tmp_path), "--dry-run", "--only", "sd15",
                    "mini_training", "--box-scale", "0.1", "--budget", "60"], env=env, check=True, timeout=300,
                   capture_output=True)
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert results["versions"]["torch"] and results["versions"]["diffusers"]   # the numbers' software, recorded
    sd15, mini = results["parts"]["sd15"], results["parts"]["mini_training"]
    assert sd15["limit_s"] == 6 and sd15["status"] == "timed out after 6 s (what it recorded before is kept)"
    assert "started" in sd15["results"] and "bf16" not in sd15["results"]
    assert mini["status"].startswith("skipped: ") and "LFW" in mini["status"]


@pytest.mark.slow
def test_the_dry_run_goes_end_to_end(tmp_path):
    """``run.sh --dry-run``: every part runs to its end on the CPU (the embedded model's training is
    skipped, naming why), the results JSON holds each part's numbers, and the log is written."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", OUT=str(tmp_path), PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry-run"], env=env, check=True,
                   timeout=1800, capture_output=True)
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    statuses = {name: entry["status"] for name, entry in results["parts"].items()}
    assert statuses.pop("mini_training").startswith("skipped: ")
    assert statuses == {name: "ok" for name in statuses} and len(statuses) == 8, results
    parts = {name: entry["results"] for name, entry in results["parts"].items()}
    assert parts["sd15"]["bf16"]["images_per_s"] > 0 and parts["sd15_compiled"]["bf16_compiled"]["images_per_s"] > 0
    assert parts["engine"]["engine"]["images"] == parts["engine"]["naive"]["images"] == 4
    assert parts["flux"]["bf16"]["seconds_per_image"] > 0 and parts["flux"]["nf4"]["seconds_per_image"] > 0
    assert parts["lora"]["checkpointing_on"]["steps_per_s"] > 0
    assert "== lora: ok" in (tmp_path / "gpu_run.log").read_text()
