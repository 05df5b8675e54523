"""Copy a trained pipeline folder in float16: how the embedded mini model gets into the package.

    python training/export_fp16.py RUN_DIR idgen/weights/mini-arc2face

``RUN_DIR`` is the ``output_dir`` of a ``task: id-model`` run (a ``save_pretrained``
``Arc2FacePipeline``). The copy keeps the folder layout, halves the weights (the mini model: about
21 MB), and adds ``training.json`` (the run's ``metrics.json``: steps, final loss, validation
numbers; for a run that continued an earlier model, that model's own record under
``continued_from``) so the shipped folder says how it was made. Files already in the target that the pipeline
does not write (its ``LICENSE.md``) are kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch
import yaml

from idgen.io import save_pretrained_atomic, write_json_atomic
from idgen.pipelines import Arc2FacePipeline


def earlier_training(run: Path) -> Optional[dict]:
    """The ``training.json`` of the model a run continued (its ``model.init``), if it has one: a model
    trained in stages keeps the record of every stage."""
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    init = (config.get("model") or {}).get("init")
    record = Path(init) / "training.json" if init else None
    return json.loads(record.read_text()) if record is not None and record.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="output_dir of a task: id-model run")
    parser.add_argument("target", help="folder to write (e.g. idgen/weights/mini-arc2face)")
    args = parser.parse_args()

    run = Path(args.run_dir)
    if not (run / "model_index.json").is_file():
        raise SystemExit(f"export_fp16.py: {run} holds no model_index.json; point it at a finished id-model run")
    history = earlier_training(run)  # read first: the target may be the folder the run started from
    pipe = Arc2FacePipeline.from_pretrained(str(run), dtype=torch.float16)
    save_pretrained_atomic(pipe, args.target, index_file="model_index.json")
    for config in Path(args.target).rglob("*.json"):  # diffusers records where it loaded from: a local path
        fields = json.loads(config.read_text())
        if fields.pop("_name_or_path", None) is not None:
            write_json_atomic(config, fields)
    if (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text())
        if history is not None:
            metrics["continued_from"] = history
        write_json_atomic(Path(args.target) / "training.json", metrics)
    size = sum(p.stat().st_size for p in Path(args.target).rglob("*") if p.is_file())
    print(f"wrote {args.target} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
