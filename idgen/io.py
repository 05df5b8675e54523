"""Crash-safe file writing: a reader never sees a half-written file, and a job never writes over
what it did not make; and weights read back with an error that names the file.

Every output of idgen (embeddings, images, manifests, checkpoints) goes through these helpers:
data is written to a temporary file in the same folder, flushed to the disk and renamed over the
target, which is atomic on POSIX and Windows. The file ends up with the permissions ``open()`` would
have given it (0666 less the umask), not the owner-only 0600 of a temporary file, so a dataset or
model written on a shared machine is readable by the people it was made for.

Temporary files and staging folders are named ``.NAME.XXXXXXXX.tmp`` / ``.NAME.XXXXXXXX.partial``
(:data:`TEMPORARY_NAME`), so what a killed job leaves behind is recognisable and
:func:`remove_temporaries` can clear it. A command checks its output folder before its work
(:func:`check_output_folder`) and reports an operating-system error as one line naming the path and
the fix (:func:`os_error_message`, :func:`output_errors`).

Weights are read only as safetensors (:func:`read_safetensors`) or with
``torch.load(weights_only=True)`` (:func:`read_torch_weights`), arrays with ``allow_pickle=False``
(:func:`read_npy`), and checked against the tensors a model expects (:func:`check_weights`): a
truncated file, a pickle, a file of another model or one holding NaN raises
:class:`~idgen.errors.DataError` naming the file and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import DataError, IdgenError, ModelFilesMissingError, OutputError

#: The file a LoRA is saved in, in a folder: the name diffusers' ``load_lora_weights(folder)`` reads
#: (diffusers' ``LORA_WEIGHT_NAME_SAFE``; ``tests/test_io.py`` checks they agree). Every LoRA idgen
#: writes, trained (:mod:`idgen.training.lora`) or forgetting (:mod:`idgen.unlearn.generator`), uses it.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"

_UMASK = os.umask(0)   # the umask can only be read by setting it: read once, put straight back
os.umask(_UMASK)

#: The name of every temporary file and staging folder made here: ``.NAME.`` + ``tempfile``'s 8
#: random characters + ``.tmp`` (a file) or ``.partial`` (a folder).
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.(tmp|partial)")

#: Bytes written (and flushed to the disk) by the test write of :func:`check_output_folder`.
_TEST_WRITE_BYTES = 64 * 1024

#: What to do about the operating-system errors an output meets, by ``errno``.
_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "give this user access to it or write elsewhere",
    errno.EPERM: "give this user access to it or write elsewhere",
    errno.EISDIR: "a folder is where a file goes: move it away or name another path",
    errno.ENOTDIR: "a file is where a folder goes: move it away or name another path",
    errno.EEXIST: "a file is where a folder goes: move it away or name another path",
}


def os_error_message(exc: OSError, then: str = "") -> str:
    """``exc`` as one line: the path, the reason and, for the usual causes (a full disk, a read-only
    folder, a file where a folder goes), what to do; ``then`` is added after that."""
    path = exc.filename2 or exc.filename   # a rename's target, else the one file
    line = f"{path}: {exc.strerror or exc}" if path else str(exc.strerror or exc)
    return "; ".join(part for part in (line, _FIXES.get(exc.errno), then) if part)


@contextmanager
def output_errors(then: str = ""):
    """Inside, an operating-system error of writing (a full disk, a read-only folder, a folder where
    a file goes: the causes :func:`os_error_message` knows) becomes an
    :class:`~idgen.errors.OutputError` with its line; ``then`` says how to carry on afterwards (e.g.
    "run the same command again to resume"). Other errors (a missing input) pass unchanged."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, IdgenError) or exc.errno not in _FIXES:
            raise
        raise OutputError(os_error_message(exc, then)) from exc


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file or staging folder of this module."""
    return TEMPORARY_NAME.fullmatch(Path(path).name) is not None


def remove_temporaries(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete the temporary files and staging folders (:data:`TEMPORARY_NAME`) that writes killed
    mid-way left in ``folder`` (and, ``recursive``, in its sub-folders); returns how many. Call it
    only on a folder the job owns, while none of its writes runs."""
    removed = 0
    for root, folders, files in os.walk(folder):
        for name in [n for n in folders if TEMPORARY_NAME.fullmatch(n)]:
            shutil.rmtree(Path(root, name))
            folders.remove(name)
            removed += 1
        for name in files:
            if TEMPORARY_NAME.fullmatch(name):
                Path(root, name).unlink(missing_ok=True)
                removed += 1
        if not recursive:
            break
    return removed


def check_output_folder(folder: str | os.PathLike, option: str, owned: Callable[[Path], bool]) -> bool:
    """Check, before a job does its work, that ``folder`` can take its output; returns whether it
    holds the job's own earlier output (``owned(folder)``), which the job may resume or replace.

    Creates nothing. Raises :class:`~idgen.errors.OutputError` naming the folder and ``option`` (the
    setting that chose it) when ``folder`` is a file, when it holds anything but temporary files
    (:func:`is_temporary`) and ``owned`` does not recognise it, or when a test write in it (or in the
    nearest existing folder above it) fails: read-only, a full disk.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; give {option} a new or empty folder")
    own = folder.is_dir() and owned(folder)
    if folder.is_dir() and not own:
        found = sorted(p.name for p in folder.iterdir() if not is_temporary(p))
        if found:
            raise OutputError(f"{folder} is not empty and holds no earlier output of this command (it holds "
                              f"{found[0]!r}{f' and {len(found) - 1} more' if len(found) > 1 else ''}); give "
                              f"{option} a new or empty folder: idgen does not write over files it did not make")
    _test_write(folder, option)
    return own


def check_output_file(path: str | os.PathLike, option: str) -> None:
    """Check, before a job does its work, that the file ``path`` can be written: not a folder, in a
    folder that is (or can be made) writable. Raises :class:`~idgen.errors.OutputError` naming
    ``path`` and ``option``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give {option} a file name")
    _test_write(path.parent, option)


def _test_write(folder: Path, option: str) -> None:
    """Write (and flush to the disk) a small temporary file where ``folder`` is or will be made."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing} is a file, so the folder {folder} cannot be made there; "
                          f"give {option} another folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=existing)
        try:
            os.write(fd, bytes(_TEST_WRITE_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder} ({option}): {exc.strerror or exc}; "
                          f"{_FIXES.get(exc.errno, 'check the folder and its disk')}") from exc


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path next to ``target``; on success it is flushed to the disk and
    replaces ``target``, so ``target`` is either the old file or the whole new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)   # after writing: some writers (safetensors) recreate the file
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(target: str | os.PathLike, replaces: re.Pattern | None = None):
    """Yield an empty staging folder next to ``target`` (hidden: ``.NAME.*.partial``); when the block
    finishes it is renamed to ``target`` in one step, when it raises (a cancelled job included) it is
    deleted. So ``target`` either does not exist or holds a finished result, never a half-written one;
    a process killed mid-way leaves only hidden folders (:func:`remove_temporaries` clears them).

    ``target`` must not exist yet, unless ``replaces`` is given: then an existing ``target`` whose
    files all have names matching it (an earlier run's output of the same kind) is swapped out for
    the new folder and deleted, and one holding any other file is refused, before the block runs,
    with an :class:`~idgen.errors.OutputError` (a job never deletes what it did not write)."""
    target = Path(target)
    if target.exists() and replaces is None:
        raise FileExistsError(f"{target} already exists; write a finished folder to a new path")
    if target.exists():
        _check_replaceable(target, replaces)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)   # a folder made by mkdir, not mkdtemp's owner-only 0700
        if target.exists():   # moved into a hidden folder first: the old files are never seen mixed with new
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
            os.rename(target, old / target.name)
            os.rename(staging, target)
            shutil.rmtree(old)
        else:
            os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_replaceable(target: Path, replaces: re.Pattern) -> None:
    if not target.is_dir():
        raise OutputError(f"{target} is a file where idgen writes a folder; move it away and run again")
    foreign = sorted(p.name for p in target.iterdir()
                     if not (is_temporary(p) or (p.is_file() and replaces.fullmatch(p.name))))
    if foreign:
        raise OutputError(f"{target} holds files idgen did not write there ({foreign[0]!r}"
                          f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); move them out "
                          "and run again: idgen replaces that folder as a whole")


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".save.", suffix=".partial") as tmp:
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
