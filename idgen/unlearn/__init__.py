"""Forgetting identities: GS-LoRA / GS-LoRA++ continual forgetting for face-recognition transformers.

>>> from idgen.unlearn import run_forgetting
>>> report = run_forgetting("training/configs/forget_orl.yaml")   # writes model/, report.json/.md, groups.png
"""

from .config import RunConfig
from .forget import finetune_task, gs_lora_task, retrain_task, run_forgetting, select_hyperparameters
from .generator import GeneratorForgetConfig, forget_identities  # the Arc2Face generator (idgen.unlearn.generator)
from .lora import add_task_lora, find_ffn_linears, find_transformer_blocks, lora_groups, merge_task_lora
from .losses import class_prototypes, forgetting_loss, group_lasso, group_soft_threshold, prototype_loss
from .metrics import h_mean, task_metrics

__all__ = [
    "GeneratorForgetConfig", "RunConfig", "add_task_lora", "class_prototypes", "find_ffn_linears", "find_transformer_blocks",
    "finetune_task", "forget_identities", "forgetting_loss", "group_lasso", "group_soft_threshold", "gs_lora_task", "h_mean",
    "lora_groups", "merge_task_lora", "prototype_loss", "retrain_task", "run_forgetting", "select_hyperparameters",
    "task_metrics",
]
