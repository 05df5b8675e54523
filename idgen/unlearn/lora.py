"""Where GS-LoRA puts its adapters, how they are grouped, and merging a finished task.

Targets are found by structure, not by parameter names: a *transformer block* is an element of an
``nn.ModuleList`` that contains an attention module (a module whose class name contains
"Attention"), and its *FFN linears* are the ``nn.Linear`` layers of the block that are not inside
that attention module. This finds ``mlp.fc1``/``mlp.fc2`` in our Face Transformer and in CLIP, and
``intermediate.dense``/``output.dense`` in BERT/ViT-style layers, without knowing any of those names.
A regular expression (``target_pattern``) can replace the rule for unusual models.

``target_parameters`` names further weights that get a LoRA of their own, each its own group (peft's
``target_parameters``): ``["head.weight"]`` lets GS-LoRA edit a recogniser's classifier head, which the
paper keeps frozen.

The adapters themselves are peft LoRA layers; each forgetting task adds its own adapter set and
merges it into the base weights when the task ends (:func:`merge_task_lora`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

GROUPINGS = ("block", "lora", "matrix")


def _is_attention(module: nn.Module) -> bool:
    return "attention" in type(module).__name__.lower()


def find_transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, block)`` for every ModuleList element that contains an attention module, in order."""
    blocks = []
    for list_name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        for index, child in enumerate(module):
            if any(_is_attention(m) for m in child.modules()):
                blocks.append((f"{list_name}.{index}" if list_name else str(index), child))
    return blocks


def find_ffn_linears(model: nn.Module, target_pattern: str | None = None) -> dict[str, list[str]]:
    """Block name → full names of its FFN linears (see the module docstring for the rule)."""
    found: dict[str, list[str]] = {}
    for block_name, block in find_transformer_blocks(model):
        inside_attention = {
            f"{name}.{sub}".strip(".")
            for name, module in block.named_modules() if _is_attention(module)
            for sub, _ in module.named_modules()
        }
        names = []
        for name, module in block.named_modules():
            full = f"{block_name}.{name}"
            if not isinstance(module, nn.Linear):
                continue
            if target_pattern is not None:
                if re.search(target_pattern, full):
                    names.append(full)
            elif name not in inside_attention:
                names.append(full)
        if names:
            found[block_name] = names
    if not found:
        raise ConfigError(
            f"found no FFN linear layers in {type(model).__name__}"
            + (f" matching {target_pattern!r}" if target_pattern else
               " (no nn.ModuleList of blocks with an attention module); set lora.target_pattern"))
    return found


@dataclass
class LoraGroup:
    """One group of the group-lasso penalty: a name and its LoRA parameters."""

    name: str
    parameters: list[nn.Parameter]

    def norm(self) -> float:
        return float(torch.sqrt(sum((p.detach() ** 2).sum() for p in self.parameters)))


def add_task_lora(model: nn.Module, adapter_name: str, rank: int = 8, alpha: float | None = None,
                  target_pattern: str | None = None, target_parameters: Sequence[str] = ()):
    """Freeze ``model`` and add a fresh LoRA set (named ``adapter_name``) to every FFN linear and to
    each weight named in ``target_parameters``.

    The layers are replaced in place, so ``model`` itself (``model.embed``, ``model(x)``) runs
    with the adapters. Returns the peft wrapper (needed to merge) and the block → targets map."""
    from peft import LoraConfig, get_peft_model

    blocks = find_ffn_linears(model, target_pattern)
    targets = [name for names in blocks.values() for name in names]
    weights = dict(model.named_parameters())
    for name in target_parameters:
        if name not in weights or weights[name].dim() != 2:
            raise ConfigError(f"lora.target_parameters: {type(model).__name__} has no 2-D weight {name!r} "
                              f"(2-D weights outside the blocks: {_other_matrices(weights, targets)})")
    extra = {"target_parameters": list(target_parameters)} if target_parameters else {}
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
                        target_modules=targets, bias="none", **extra)
    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    return peft_model, blocks


def _other_matrices(weights: dict[str, torch.Tensor], ffn_linears: list[str]) -> list[str]:
    return [name for name, w in weights.items() if w.dim() == 2 and name.rsplit(".", 1)[0] not in ffn_linears]


def lora_groups(model: nn.Module, blocks: dict[str, list[str]], adapter_name: str,
                grouping: str = "block", target_parameters: Sequence[str] = ()) -> list[LoraGroup]:
    """The LoRA parameters of ``adapter_name`` grouped per block, per adapted linear ("lora": its A
    and B) or per matrix (A and B separately); then one group per weight of ``target_parameters``
    (its A and B, whatever the grouping)."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"lora.grouping must be one of {GROUPINGS}, not {grouping!r}")
    modules = dict(model.named_modules())
    groups = []
    for block_name, targets in blocks.items():
        per_target = []
        for target in targets:
            layer = modules[target]
            a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            per_target.append((target, a, b))
        if grouping == "block":
            groups.append(LoraGroup(block_name, [p for _, a, b in per_target for p in (a, b)]))
        elif grouping == "lora":
            groups += [LoraGroup(t, [a, b]) for t, a, b in per_target]
        else:
            groups += [LoraGroup(f"{t}.{m}", [p]) for t, a, b in per_target for m, p in (("A", a), ("B", b))]
    for name in target_parameters:
        owner = modules[name.rsplit(".", 1)[0]]
        groups.append(LoraGroup(name, [owner.lora_A[adapter_name].weight, owner.lora_B[adapter_name].weight]))
    return groups


def merge_task_lora(peft_model) -> nn.Module:
    """Fold the task's LoRA into the base weights and remove the adapter layers."""
    return peft_model.merge_and_unload()
