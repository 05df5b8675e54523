"""Plot a training run: the loss of every step and each validation metric, against the step.

    python training/plot_run.py RUN_DIR [RUN_DIR ...] --output-file curve.png

``RUN_DIR`` is the ``output_dir`` of a ``training/train.py`` run: its ``log.jsonl`` holds the loss of
every step and its TensorBoard log (``logs/``) the ``val/*`` metrics. Several runs (a run and its
continuation, say) are drawn on one step axis, each shifted by ``--offset`` steps, so a model trained
in stages reads as one curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from idgen.io import atomic_path  # noqa: E402


def read_run(run: Path) -> tuple[list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """(step, loss) pairs from ``log.jsonl`` and {metric: [(step, value)]} for every ``val/`` scalar."""
    losses = [(row["step"], row["loss"]) for row in map(json.loads, (run / "log.jsonl").read_text().splitlines())]
    metrics: dict[str, list[tuple[int, float]]] = {}
    for folder in sorted({p.parent for p in (run / "logs").rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(folder))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("val/"):
                metrics.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return losses, {tag: sorted(dict(values).items()) for tag, values in metrics.items()}


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` steps: one step's loss is one batch's, far too noisy to read."""
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="output_dir of each run")
    parser.add_argument("--offset", type=int, nargs="*", default=None,
                        help="steps to add to each run's steps (default 0 each), e.g. 0 2200 for a continuation")
    parser.add_argument("--labels", nargs="*", default=None, help="one legend label per run")
    parser.add_argument("--smooth", type=int, default=50, help="steps in the loss's trailing mean")
    parser.add_argument("--output-file", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    offsets = args.offset or [0] * len(args.runs)
    labels = args.labels or [run.name for run in args.runs]
    if len(offsets) != len(args.runs) or len(labels) != len(args.runs):
        parser.error("give one --offset and one --labels entry per run")

    read = [read_run(run) for run in args.runs]
    tags = sorted({tag for _, metrics in read for tag in metrics})
    figure, axes = plt.subplots(1, 1 + len(tags), figsize=(4.2 * (1 + len(tags)), 3.4), squeeze=False)
    axes = axes[0]
    for (losses, metrics), offset, label in zip(read, offsets, labels):
        steps = [offset + step for step, _ in losses]
        axes[0].plot(steps, smooth([loss for _, loss in losses], args.smooth), label=label)
        for axis, tag in zip(axes[1:], tags):
            points = metrics.get(tag, [])
            axis.plot([offset + s for s, _ in points], [v for _, v in points], marker="o", label=label)
    axes[0].set_title(f"training loss ({args.smooth}-step mean)")
    for axis, tag in zip(axes[1:], tags):
        axis.set_title(tag)
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    if len(args.runs) > 1:
        axes[0].legend()
    figure.tight_layout()
    with atomic_path(args.output_file) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    print(f"wrote {args.output_file}")


if __name__ == "__main__":
    main()
