"""The ORL preset end to end (CI): train a tiny Face Transformer on ORL, forget 4 of 40 people with
GS-LoRA, compare with the baselines, and check the outcome and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idgen.cli import main
from idgen.recognition import FaceRecognizer

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "forget_orl.yaml"


@pytest.mark.slow
def test_orl_preset_forgets_and_beats_baselines(orl_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["forget", "--config", str(CONFIG), "--output-dir", str(out),
                 "--set", f"data.root={orl_dir}", "--set", f"model.path={tmp_path / 'base'}",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    gs, = report["methods"]["gs-lora"]
    retrain, = report["methods"]["retrain"]
    finetune, = report["methods"]["finetune"]
    assert gs["acc_f_before"] >= 50          # the base model did know these people
    assert gs["acc_f"] <= 10                 # ... and no longer does
    assert gs["acc_r"] >= gs["acc_r_base"] - 5
    assert gs["h_mean"] >= gs["h_mean_ideal"] - 5
    assert gs["trainable_share"] <= 2.0
    assert gs["h_mean"] > retrain["h_mean"] and gs["h_mean"] > finetune["h_mean"]
    assert (out / "report.md").read_text().count("| gs-lora |") == 1
    assert (out / "groups.png").read_bytes()[:4] == b"\x89PNG"
    edited = FaceRecognizer.from_pretrained(out / "model")
    assert len(edited.class_names) == 40 and not any("lora" in k for k in edited.state_dict())
