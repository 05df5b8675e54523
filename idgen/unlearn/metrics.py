"""Forgetting metrics (GS-LoRA's definitions), all in percent.

Acc_r: test accuracy on classes never forgotten; Acc_f: on the classes of the current task;
drop = Acc_f(before the task) − Acc_f; H-Mean = 2·drop·Acc_r / (drop + Acc_r): high only when the
model both forgets and remembers. Its ideal is reached with drop = Acc_f(before) and Acc_r = Acc_r
of the base model. Predictions are the arg-max over *all* classes, forgotten ones included.
"""

from __future__ import annotations

import torch


def accuracy(predictions: torch.Tensor, labels: torch.Tensor, classes) -> float:
    mask = torch.isin(labels, torch.as_tensor(sorted(classes), dtype=torch.long))
    if not mask.any():
        return float("nan")
    return 100.0 * float((predictions[mask] == labels[mask]).float().mean())


def h_mean(drop: float, acc_r: float) -> float:
    return 0.0 if drop + acc_r <= 0 else 2 * drop * acc_r / (drop + acc_r)


def task_metrics(predictions, labels, *, forget_now, forgotten_before, retained,
                 acc_f_before: float, base_acc_r: float, base_acc_f_all: float) -> dict:
    """Metrics of one task: the task's own classes, every class forgotten so far (cumulative) and the
    classes forgotten by earlier tasks (they must stay forgotten)."""
    acc_f = accuracy(predictions, labels, forget_now)
    acc_r = accuracy(predictions, labels, retained)
    drop = acc_f_before - acc_f
    all_forgotten = set(forget_now) | set(forgotten_before)
    acc_f_cum = accuracy(predictions, labels, all_forgotten)
    return {
        "acc_f": acc_f, "acc_f_before": acc_f_before, "acc_r": acc_r, "acc_r_base": base_acc_r,
        "drop": drop, "h_mean": h_mean(drop, acc_r), "h_mean_ideal": h_mean(acc_f_before, base_acc_r),
        "acc_previously_forgotten": accuracy(predictions, labels, forgotten_before) if forgotten_before else None,
        "cumulative": {"acc_f": acc_f_cum, "drop": base_acc_f_all - acc_f_cum,
                       "h_mean": h_mean(base_acc_f_all - acc_f_cum, acc_r)},
    }
