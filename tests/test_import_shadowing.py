"""Python run from the folder that holds a clone of the repository named ``idgen`` finds the clone's top
folder as ``idgen`` (a namespace package: it has no ``__init__.py``) ahead of the editable install; the
first idgen module that runs then stops the import with what to do, instead of a TypeError deep inside
(checked in fresh interpreters, from a temporary folder holding a link to this checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import idgen

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def beside_a_clone(tmp_path):
    """A folder holding a link named ``idgen`` to this checkout; skips where a folder named idgen
    cannot shadow the installed package (a regular install: a package with ``__init__.py`` anywhere
    on the path wins over a namespace folder)."""
    (tmp_path / "idgen").symlink_to(ROOT, target_is_directory=True)
    found = python("import idgen; print(getattr(idgen, '__file__', None))", tmp_path)
    assert found.returncode == 0, found.stderr[-2000:]
    if found.stdout.strip() != "None":
        pytest.skip(f"here `import idgen` finds {found.stdout.strip()}: no namespace package to refuse")
    return tmp_path


def test_importing_beside_a_clone_says_to_change_folder(beside_a_clone):
    clone = beside_a_clone / "idgen"
    for code in ("from idgen.pipelines.mini import load_mini_pipeline", "import idgen.cli"):
        result = python(code, beside_a_clone)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last == (f"idgen.errors.ShadowedPackageError: `import idgen` found the folder {clone} instead of the "
                        f"idgen package: you are running Python from the folder that contains the idgen clone. Run "
                        f"it from another folder, or from inside the clone (cd {clone})"), result.stderr[-2000:]


def test_inside_the_clone_idgen_is_the_package(beside_a_clone):
    inside = python("import idgen.errors, idgen; print(idgen.__file__)", beside_a_clone / "idgen")
    assert inside.returncode == 0, inside.stderr[-2000:]
    assert Path(inside.stdout.strip()) == ROOT / "idgen" / "__init__.py"


def test_the_idgen_command_beside_a_clone_is_the_package(beside_a_clone):
    """The console script's own folder, not the current one, comes first on its path: no shadowing."""
    command = Path(sys.executable).with_name("idgen")
    if not command.is_file():
        pytest.skip(f"no idgen command beside {sys.executable}")
    result = subprocess.run([str(command), "--version"], cwd=beside_a_clone, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"idgen {idgen.__version__}"
