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
                 f"data.root={orl_dir}", f"model.path={tmp_path / 'base'}", f"data.cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    gs, = report["methods"]["gs-lora"]
    retrain, = report["methods"]["retrain"]
    finetune, = report["methods"]["finetune"]
    dropped, = report["methods"]["drop-classes"]
    # the targets, at the configured learning rates (chosen on ORL's validation split with 3
    # seeds: GS-LoRA 1e-2, fine-tune 1e-5). Measured (seed 0; docs/results.md for seeds 0-2): Acc_r
    # 57.41 → 60.19, Acc_f 66.67 → 0, H-Mean 63.26 (ideal 61.69), 1.61 % trainable, 1 of 4 groups
    # exactly zero; fine-tune 60.13, retrain 33.33, drop-classes 62.75.
    assert gs["acc_f_before"] >= 50          # the base model did know these people
    assert gs["acc_f"] <= 2                  # ... and no longer does
    assert gs["acc_r"] >= gs["acc_r_base"] - 3
    assert gs["h_mean"] >= gs["h_mean_ideal"] - 3
    assert gs["trainable_share"] <= 2.0
    assert gs["h_mean"] > retrain["h_mean"] and gs["h_mean"] > finetune["h_mean"]
    # the no-training reference: the head never names them, but their photos still cluster as before
    assert dropped["acc_f"] == 0 and dropped["gallery_acc_f"] == dropped["gallery_acc_f_before"] > 50
    assert gs["gallery_acc_f"] < dropped["gallery_acc_f"]   # GS-LoRA changed the embedding (75 → 66.67)
    assert gs["nonzero_groups"] < gs["num_groups"]          # the proximal group lasso zeroed whole blocks
    assert min(gs["group_norms"].values()) == 0.0
    assert (out / "report.md").read_text().count("| gs-lora |") == 1
    assert (out / "groups.png").read_bytes()[:4] == b"\x89PNG"
    edited = FaceRecognizer.from_pretrained(out / "model")
    assert len(edited.class_names) == 40 and not any("lora" in k for k in edited.state_dict())
