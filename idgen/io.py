"""Crash-safe file writing: a reader never sees a half-written file.

Every output of idgen (embeddings, images, manifests, checkpoints) goes through these helpers:
data is written to a temporary file in the same folder and renamed over the target, which is
atomic on POSIX and Windows. The file ends up with the permissions ``open()`` would have given it
(0666 less the umask), not the owner-only 0600 of a temporary file, so a dataset or model written
on a shared machine is readable by the people it was made for.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

#: The file a LoRA is saved in, in a folder: the name diffusers' ``load_lora_weights(folder)`` reads
#: (diffusers' ``LORA_WEIGHT_NAME_SAFE``; ``tests/test_io.py`` checks they agree). Every LoRA idgen
#: writes, trained (:mod:`idgen.training.lora`) or forgetting (:mod:`idgen.unlearn.generator`), uses it.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"

_UMASK = os.umask(0)   # the umask can only be read by setting it: read once, put straight back
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path next to ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)   # after writing: some writers (safetensors) recreate the file
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(target: str | os.PathLike):
    """Yield an empty staging folder next to ``target`` (hidden: ``.NAME.*.partial``); when the block
    finishes it is renamed to ``target`` in one step, when it raises (a cancelled job included) it is
    deleted. So ``target`` either does not exist or holds a finished result, never a half-written one;
    a process killed mid-way leaves only the hidden staging folder. ``target`` must not exist yet."""
    import shutil

    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; write a finished folder to a new path")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)   # a folder made by mkdir, not mkdtemp's owner-only 0700
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_json_atomic(target: str | os.PathLike, obj) -> None:
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_module_weights(module, target: str | os.PathLike, metadata: dict | None = None) -> None:
    """A torch module's state dict as safetensors, atomically (detached, contiguous and on the CPU,
    as safetensors needs)."""
    save_safetensors_atomic({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()},
                            target, metadata)


def save_safetensors_atomic(tensors: dict, target: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a dict of torch tensors or numpy arrays as safetensors, atomically."""
    import numpy as np

    with atomic_path(target) as tmp:
        if all(isinstance(v, np.ndarray) for v in tensors.values()):
            from safetensors.numpy import save_file
        else:
            from safetensors.torch import save_file
        save_file({k: v for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_pretrained_atomic(model, folder: str | os.PathLike, index_file: str | None = None) -> None:
    """``model.save_pretrained`` into a temporary folder beside ``folder``, then each entry moved
    into ``folder`` (replacing what was there), ``index_file`` (e.g. a pipeline's
    ``model_index.json``) last, so an interrupted save never leaves a loadable-looking half folder."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".save-") as tmp:
        model.save_pretrained(tmp)
        entries = sorted(Path(tmp).iterdir(), key=lambda p: p.name == index_file)
        for entry in entries:
            target = folder / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
