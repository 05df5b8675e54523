"""Data parallelism for LoRA training, and the launch mistakes that would silently break it.

LoRA tasks do not wrap their models in ``DistributedDataParallel``: the frozen UNet stays the plain
module that the validation pipeline and the LoRA writer use, and :func:`average_gradients` does in one
all-reduce of a flattened buffer what DDP would do for the few LoRA tensors. (Whole-network tasks use
DDP: :mod:`.recipes`.) Every process then applies the same averaged gradient with the same optimizer
state, so the replicas stay equal; :func:`replica_spread` measures that at the end of a run.

On CPU, ``accelerate launch --cpu --num_processes N`` starts a single process unless an MPI hostfile
is given (``--mpirun_hostfile``); N CPU processes over gloo come from
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`` (torchrun underneath).
"""

from __future__ import annotations

import os
import warnings

import torch

from ..errors import ConfigError

CPU_MULTI_PROCESS = "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N training/train.py ..."


def check_launch(accelerator, mixed_precision: str) -> None:
    """Stop runs whose processes or precision are not what the user asked for."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > accelerator.num_processes:
        raise ConfigError(f"{world_size} processes were launched but each trains alone (accelerate found no GPU "
                          f"and was not told to use the CPU); on CPU launch with: {CPU_MULTI_PROCESS}")
    single_cpu_launch = (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
                         and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ)
    if single_cpu_launch and accelerator.is_main_process:  # what `--cpu --num_processes N>1` does without MPI
        warnings.warn("accelerate launch --cpu started one process: without --mpirun_hostfile it ignores "
                      f"--num_processes. For several CPU processes use: {CPU_MULTI_PROCESS}", stacklevel=2)
    if mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("optim.mixed_precision=fp16 needs a GPU: accelerate has no fp16 autocast on the CPU. "
                          "Use optim.mixed_precision=bf16 (or no) on the CPU.")


def average_gradients(accelerator, params: list[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over all processes (one all-reduce)."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    for p, chunk in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = chunk.view_as(p).clone()


def replica_spread(accelerator, params: list[torch.nn.Parameter]) -> float:
    """Largest absolute difference between any process's copy of ``params`` and the main process's
    (0.0 when the replicas are identical, as they must be)."""
    if accelerator.num_processes == 1:
        return 0.0
    flat = torch.cat([p.detach().float().reshape(-1) for p in params])
    every = accelerator.gather(flat[None])  # P × numel
    return float((every - every[0]).abs().max())
