"""Writing a forgetting run's report: JSON (everything), Markdown (the tables) and a PNG of the
LoRA group norms after each task (which blocks GS-LoRA actually changed)."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_path, write_bytes_atomic, write_json_atomic

COLUMNS = ("task", "acc_f_before", "acc_f", "acc_r_base", "acc_r", "drop", "h_mean", "h_mean_ideal",
           "acc_previously_forgotten", "gallery_acc_f_before", "gallery_acc_f", "gallery_acc_r", "trainable_share",
           "wall_seconds")


def _fmt(value, spread: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{text} ± {spread:.2f}" if spread else text   # no ± where every seed gave the same number


def _choice(candidate: dict) -> str:
    names = {"learning_rate": "learning rate", "bound": "BND", "alpha": "α", "prototype_weight": "γ"}
    return " ".join(f"{names[k]} {candidate[k]:g}" for k in names if k in candidate)


def markdown_report(report: dict) -> str:
    base = report["base"]
    lines = [
        "# Forgetting report", "",
        f"Data: {report['data']['identities']} identities, {report['data']['train_images']} train / "
        f"{report['data']['test_images']} test images. Base recogniser: {base['parameters']:,} parameters, "
        f"test accuracy {base['accuracy']:.2f} %.", "",
        "Tasks: " + "; ".join(f"{i + 1}: {', '.join(t)}" for i, t in enumerate(report["tasks"])), "",
        "All numbers in percent except wall time (s). `acc_previously_forgotten`: accuracy on classes "
        "forgotten by earlier tasks; `cum_*`: over every class forgotten so far; `gallery_*`: the same "
        "test photos identified by the nearest class mean of the training photos' embeddings, all embedded "
        "by the edited model (a deployed recogniser that enrols people again), not by the classifier head.", "",
    ]
    for method, selection in report.get("selection", {}).items():
        scores = ", ".join(f"{_choice(c)}: {c['val_h_mean']:.2f}" for c in selection["candidates"])
        lines += [f"Hyper-parameters of {method} chosen on the validation split "
                  f"({report['data']['validation_images']} training images held out): {_choice(selection['chosen'])} "
                  f"(validation H-Mean: {scores}).", ""]
    repeats = report["config"].get("repeats", 1)
    if repeats > 1:
        lines += [f"Every number is the mean over {repeats} training seeds (seed {report['config']['seed']} on), "
                  "± the standard deviation where the seeds differ; group counts are the first seed's. Each seed's own "
                  "numbers are in report.json (`runs`).", ""]
    header = ["method", *COLUMNS, "cum_acc_f", "cum_h_mean", "nonzero_groups"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, results in report["methods"].items():
        for r in results:
            groups = f"{r['nonzero_groups']}/{r['num_groups']}" if "num_groups" in r else "–"
            spread = r.get("spread", {})   # any averaged column may differ between seeds
            row = [method, *(_fmt(r[c], spread.get(c)) for c in COLUMNS),
                   _fmt(r["cumulative"]["acc_f"], spread.get("cum_acc_f")),
                   _fmt(r["cumulative"]["h_mean"], spread.get("cum_h_mean")), groups]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_group_norms(results: list[dict], target: Path, zero_tol: float) -> None:
    """A task × group heat map of LoRA group norms; zero groups (below ``zero_tol``) are blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results[0]["group_norms"])
    norms = np.array([[r["group_norms"][n] for n in names] for r in results])
    shown = np.ma.masked_less(norms, zero_tol)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 0.6 * len(results) + 1.6))
    image = ax.imshow(shown, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(results)), [f"task {r['task']}" for r in results])
    for (i, j), value in np.ndenumerate(norms):
        ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=6,
                color="white" if value >= zero_tol else "black")
    ax.set_title(f"LoRA group norms (blank: < {zero_tol:g}, i.e. block unchanged)", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(report: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "report.json", report)
    write_bytes_atomic(folder / "report.md", markdown_report(report).encode())
    method = report["config"]["method"]
    plot_group_norms(report["methods"][method], folder / "groups.png", report["config"]["forget"]["lora"]["zero_tol"])
