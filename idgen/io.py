"""Crash-safe file writing, and weights read back with an error that names the file.

Every output of idgen (embeddings, images, manifests, checkpoints) goes through these helpers:
data is written to a temporary file in the same folder and renamed over the target, which is
atomic on POSIX and Windows. The file ends up with the permissions ``open()`` would have given it
(0666 less the umask), not the owner-only 0600 of a temporary file, so a dataset or model written
on a shared machine is readable by the people it was made for.

Weights are read only as safetensors (:func:`read_safetensors`) or with
``torch.load(weights_only=True)`` (:func:`read_torch_weights`), arrays with ``allow_pickle=False``
(:func:`read_npy`), and checked against the tensors a model expects (:func:`check_weights`): a
truncated file, a pickle, a file of another model or one holding NaN raises
:class:`~idgen.errors.DataError` naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError, ModelFilesMissingError

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


# ---------------------------------------------------------------------- reading weights
def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _existing(path: str | os.PathLike, fix: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFilesMissingError(f"{path}: no such file; {fix}")
    return path


@contextmanager
def open_safetensors(path: str | os.PathLike, fix: str, framework: str = "pt"):
    """``safe_open`` on ``path``, its header checked (a file cut short fails here, before any
    tensor is read). A file that is not complete safetensors raises :class:`DataError` saying what it
    is instead (a pickle, truncated, something else) and then ``fix``, what the user should do."""
    from safetensors import safe_open

    path = _existing(path, fix)
    try:
        handle = safe_open(str(path), framework=framework)
    except Exception as exc:  # noqa: BLE001 — SafetensorError or OSError: the file is not usable
        with open(path, "rb") as raw:
            head = raw.read(9)   # safetensors: an 8-byte header length, then the header's "{"
        pickled = head.startswith(b"PK\x03\x04") or (head.startswith(b"\x80") and head[8:] != b"{")
        what = ("a pickle (torch.save) file, not safetensors; idgen does not unpickle weights (a pickle can run "
                "code): convert it with safetensors.torch.save_file" if pickled
                else f"not a complete safetensors file ({exc}): cut short or another format")
        raise DataError(f"{path}: {what}; {fix}") from None
    with handle:
        yield handle


def read_safetensors(path: str | os.PathLike, fix: str, framework: str = "pt") -> dict:
    """Every tensor of a safetensors file (torch tensors, or numpy arrays with ``framework="numpy"``);
    a missing file raises :class:`~idgen.errors.ModelFilesMissingError`, an unusable one
    :class:`DataError` (:func:`open_safetensors`), both naming ``path`` and ending with ``fix``."""
    with open_safetensors(path, fix, framework) as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def read_torch_weights(path: str | os.PathLike, fix: str):
    """What a PyTorch weights file (``torch.save``: ``.pth``, ``.bin``, ``.pt``) holds, read with
    ``torch.load(weights_only=True)``, so no code in it runs: a pickle that asks for code, or a file
    cut short, raises :class:`DataError` naming ``path`` (and the code it asked for) and ending with ``fix``."""
    import torch

    path = _existing(path, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unreadable or unsafe pickle
        code = re.search(r"GLOBAL ([\w.]+)", str(exc))
        why = (f"the pickle asks for {code.group(1)}, which idgen never runs" if code
               else str(exc).strip().split("\n")[0])
        raise DataError(f"{path}: cannot be read as a PyTorch weights file with weights_only=True ({why}); "
                        f"{fix}") from None


def read_npy(path: str | os.PathLike, fix: str):
    """The numeric array in a ``.npy`` file, read with ``allow_pickle=False``: an object array (reading
    it would mean unpickling), an ``.npz`` archive, or a file cut short raises :class:`DataError`
    naming ``path`` and ending with ``fix``."""
    import numpy as np

    path = _existing(path, fix)
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        why = ("it holds Python objects (dtype object), and idgen does not unpickle them (a pickle can run code)"
               if "allow_pickle" in str(exc) else f"not a complete .npy array ({exc})")
        raise DataError(f"{path}: {why}; {fix}") from None
    except Exception as exc:  # noqa: BLE001 — EOFError, OSError, …: cut short or not .npy
        raise DataError(f"{path}: not a complete .npy array ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError(f"{path}: an .npz archive, not one .npy array; {fix}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: holds {array.dtype} values, not numbers; {fix}")
    return array


def check_weights(state: dict, expected: dict, path: str | os.PathLike, what: str, fix: str,
                  optional: tuple[str, ...] = ()) -> None:
    """Check that ``state`` (name → tensor) holds exactly the tensors ``expected`` (name → shape)
    names, each of that shape (those in ``optional`` may be absent), and no NaN or infinite value;
    otherwise raise :class:`DataError`: "``path``: not ``what``: missing …; unexpected …; wrong shape
    …; ``fix``", or which tensors hold NaN/Inf."""
    import torch

    missing = sorted(set(expected) - set(state) - set(optional))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        problems = [f"{label} {_some(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise DataError(f"{path}: not {what}: {'; '.join(problems)}; {fix}")
    broken = sorted(k for k, v in state.items()
                    if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise DataError(f"{path}: NaN or infinite values in {_some(broken)} (training diverged or the file is "
                        f"damaged); {fix}")


def load_module_weights(module, path: str | os.PathLike, what: str, fix: str) -> None:
    """Load a safetensors file that :func:`save_module_weights` wrote into ``module``, after
    :func:`read_safetensors` and :func:`check_weights` (exactly the module's tensors, its shapes, finite)."""
    state = read_safetensors(path, fix)
    check_weights(state, {k: v.shape for k, v in module.state_dict().items()}, path, what, fix)
    module.load_state_dict(state)
