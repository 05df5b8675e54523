"""The GS-LoRA / GS-LoRA++ objective, term by term.

loss = L_remain + β·L_forget + α·L_structure (+ γ·L_prototype for GS-LoRA++)

* L_remain: cross-entropy on retained classes (the margin head's training logits).
* L_forget: ReLU(BND − CE on forgotten classes): raise the forgotten classes' loss until it passes
  the bound, then stop, so the model is not driven to arbitrary (and damaging) extremes.
* L_structure: group lasso Σ_g sqrt(Σ_{W∈g} ||W||²) over LoRA groups: whole groups go to zero, so
  only a few blocks change. Its (sub)gradient alone never lands a group exactly on zero (the
  optimiser overshoots and oscillates around it), so by default the term is applied as a proximal
  step instead (:func:`group_soft_threshold` after each optimiser step), which sets a group to
  exactly zero whenever one step would shrink it past zero.
* L_prototype (GS-LoRA++): prototypes are class means of the *frozen* model's normalised
  embeddings. Retained samples are classified against the prototypes (cross-entropy on
  ``scale·cos(e, P)``), pulling them to their own prototype; forgotten samples get the same bounded
  push-away as L_forget, on their prototype logits. With few images per class this anchors the
  embedding geometry that the linear head alone cannot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_lasso(groups: list[list[torch.Tensor]]) -> torch.Tensor:
    """Σ over groups of the L2 norm of all the group's entries."""
    return sum(torch.linalg.vector_norm(torch.cat([p.flatten() for p in group])) for group in groups)


@torch.no_grad()
def group_soft_threshold(groups: list[list[torch.Tensor]], threshold: float) -> list[float]:
    """The proximal operator of ``threshold · Σ_g ||w_g||``, in place: every group is scaled by
    ``max(0, 1 − threshold / ||w_g||)`` (a group whose norm is at most ``threshold`` becomes exactly
    zero). Returns the group norms after the step."""
    norms = []
    for group in groups:
        norm = float(torch.linalg.vector_norm(torch.cat([p.flatten() for p in group])))
        factor = max(0.0, 1.0 - threshold / norm) if norm > 0 else 0.0
        for p in group:
            p.mul_(factor)
        norms.append(norm * factor)
    return norms


def forgetting_loss(logits: torch.Tensor, labels: torch.Tensor, bound: float) -> torch.Tensor:
    """ReLU(bound − mean cross-entropy): zero once the forgotten samples' loss exceeds ``bound``."""
    return F.relu(bound - F.cross_entropy(logits, labels))


@torch.no_grad()
def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_classes × D normalised class means, bool mask of classes that had samples)."""
    normed = F.normalize(embeddings, dim=-1)
    sums = torch.zeros(num_classes, normed.shape[1]).index_add_(0, labels, normed)
    counts = torch.bincount(labels, minlength=num_classes)
    return F.normalize(sums / counts.clamp(min=1)[:, None], dim=-1), counts > 0


def prototype_logits(embeddings: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor,
                     scale: float) -> torch.Tensor:
    logits = scale * F.linear(F.normalize(embeddings, dim=-1), prototypes)
    return logits.masked_fill(~present, float("-inf"))


def prototype_loss(retain_emb, retain_labels, forget_emb, forget_labels, prototypes, present,
                   scale: float, bound: float) -> torch.Tensor:
    retain = F.cross_entropy(prototype_logits(retain_emb, prototypes, present, scale), retain_labels)
    forget = forgetting_loss(prototype_logits(forget_emb, prototypes, present, scale), forget_labels, bound)
    return retain + forget
