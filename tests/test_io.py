"""Atomic writes: all or nothing, with the permissions a plain open() would give."""

import stat

import pytest

from idgen.io import atomic_path, save_safetensors_atomic, write_json_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_permissions_open_gives(tmp_path):
    """A temporary file is created owner-only (0600); the finished output must not stay that way,
    or a dataset written on a shared machine is unreadable to everyone else."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    write_json_atomic(tmp_path / "report.json", {"a": 1})
    save_safetensors_atomic({"x": __import__("torch").zeros(2)}, tmp_path / "w.safetensors")
    assert _mode(tmp_path / "report.json") == _mode(plain)
    assert _mode(tmp_path / "w.safetensors") == _mode(plain)


def test_atomic_writes_follow_the_umask(tmp_path, monkeypatch):
    """The same, independent of the umask this test runs under (with 077 the check above could not
    tell 0600 from the umask): under 022 the file is 0644, group and others may read it."""
    import idgen.io

    monkeypatch.setattr(idgen.io, "_UMASK", 0o022)
    write_json_atomic(tmp_path / "report.json", {"a": 1})
    assert _mode(tmp_path / "report.json") == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"version": 2, "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_the_lora_file_name_is_the_one_diffusers_loads():
    """Every LoRA idgen writes (trained or forgetting) is saved under the name that diffusers'
    ``load_lora_weights(folder)`` looks for; a diffusers that renamed it would fail here, not in use."""
    from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE

    from idgen.io import LORA_WEIGHT_NAME

    assert LORA_WEIGHT_NAME == LORA_WEIGHT_NAME_SAFE


def test_weights_files_that_cannot_be_used_are_refused_naming_the_file_and_the_fix(tmp_path):
    """The one reader of weights: a file cut short, a pickle under a safetensors name, a pickle that
    would run code, and a missing file each raise an IdgenError naming the file and ending with the fix."""
    import torch
    from hostile_files import cut_short, pickle_running_code, pickled_instead

    from idgen.errors import DataError, ModelFilesMissingError
    from idgen.io import read_safetensors, read_torch_weights

    for name in ("cut.safetensors", "pickled.safetensors"):
        save_safetensors_atomic({"x": torch.arange(1000.0)}, tmp_path / name)
    cut_short(tmp_path / "cut.safetensors")
    pickled_instead(tmp_path / "pickled.safetensors")
    with pytest.raises(DataError, match=r"cut.safetensors: not a complete safetensors file .*; copy it again$"):
        read_safetensors(tmp_path / "cut.safetensors", "copy it again")
    with pytest.raises(DataError, match=r"pickled.safetensors: a pickle \(torch.save\) file, not safetensors; "
                                        r"idgen does not unpickle .*; copy it again$"):
        read_safetensors(tmp_path / "pickled.safetensors", "copy it again")
    with pytest.raises(ModelFilesMissingError, match=r"gone.safetensors: no such file; copy it again"):
        read_safetensors(tmp_path / "gone.safetensors", "copy it again")
    marker = tmp_path / "ran"
    pickle_running_code(tmp_path / "evil.bin", marker)
    with pytest.raises(DataError, match=r"evil.bin: cannot be read .*weights_only=True \(the pickle asks for "
                                        r"(posix|os).system, which idgen never runs\); copy it again$"):
        read_torch_weights(tmp_path / "evil.bin", "copy it again")
    assert not marker.exists()


def test_check_weights_names_what_differs_and_non_finite_tensors():
    import torch

    from idgen.errors import DataError
    from idgen.io import check_weights

    expected = {"a": (2,), "b": (3,), "c": (1,)}
    with pytest.raises(DataError, match=r"w.st: not a model: missing c; unexpected d; wrong shape b; fix it$"):
        check_weights({"a": torch.zeros(2), "b": torch.zeros(4), "d": torch.zeros(1)}, expected, "w.st", "a model",
                      "fix it")
    check_weights({"a": torch.zeros(2), "b": torch.zeros(3)}, expected, "w.st", "a model", "fix it", optional=("c",))
    with pytest.raises(DataError, match=r"w.st: NaN or infinite values in b \(.*\); fix it$"):
        check_weights({"a": torch.zeros(2), "b": torch.tensor([0, float("-inf"), 0]), "c": torch.ones(1)}, expected,
                      "w.st", "a model", "fix it")


def test_read_npy_reads_numbers_and_refuses_objects_and_archives(tmp_path):
    import numpy as np
    from hostile_files import object_array_npy

    from idgen.errors import DataError
    from idgen.io import read_npy

    np.save(tmp_path / "good.npy", np.arange(6.0).reshape(2, 3))
    assert read_npy(tmp_path / "good.npy", "fix").tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(DataError, match=r"objects.npy: it holds Python objects .*; fix$"):
        read_npy(object_array_npy(tmp_path / "objects.npy"), "fix")
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.ones(2))
    with pytest.raises(DataError, match=r"two.npz: an .npz archive, not one .npy array; fix$"):
        read_npy(tmp_path / "two.npz", "fix")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"text.npy: holds <U1 values, not numbers; fix$"):
        read_npy(tmp_path / "text.npy", "fix")
