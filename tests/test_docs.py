"""The README front page and the docs site: short, every relative link resolves, no developer paths in
user pages, and the strict mkdocs build (reference pages generated from the code) passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
USER_PAGES = [ROOT / "README.md", *(p for p in PAGES if p != DOCS / "development.md")]
#: Phrases about the developers' own set-up that a user page must not contain.
DEVELOPER_PHRASES = ["../shared", "this machine", "our machines", "this project's machines", "this session"]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    targets = (m.group(1) for m in LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_a_short_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_docs_exist_for_every_nav_section():
    assert (DOCS / "index.md").is_file() and len(PAGES) >= 15


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_link_checker_sees_links():
    assert "docs/guides/arc2face.md" in relative_links(ROOT / "README.md")


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_pages_name_no_developer_paths(page):
    text = page.read_text(encoding="utf-8").lower()
    found = [phrase for phrase in DEVELOPER_PHRASES if phrase in text]
    assert not found, f"{page.relative_to(ROOT)} mentions {found}; write for a user (e.g. PATH/TO/lfw)"


def test_mkdocs_strict_build_passes(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    config = (tmp_path / "site" / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "usage: idgen generate" in cli and "usage: python app.py" in cli      # generated from the parsers
    assert "optim.learning_rate" in config and "forget.lora.rank" in config      # generated from the dataclasses


def _setup_block(page: Path) -> str:
    """The fenced block of ``page`` that installs PyTorch and idgen (the one holding both commands)."""
    blocks = [b for b in FENCE.findall(page.read_text(encoding="utf-8")) if "pip install torch" in b]
    assert len(blocks) == 1, f"{page.relative_to(ROOT)}: {len(blocks)} blocks install PyTorch; state it once"
    return blocks[0]


def test_the_set_up_commands_are_stated_once_and_the_same_everywhere():
    """README, the docs' home page and Install give the same block, and CI runs its commands."""
    readme = _setup_block(ROOT / "README.md")
    assert _setup_block(DOCS / "index.md") == readme == _setup_block(DOCS / "install.md")
    commands = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("pip install")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace("-c constraints/ci.txt ", "")
    assert "pip install torch==2.13.0" in commands and 'pip install -e ".[dev]"' in commands
    assert "pip install --quiet torch==2.13.0" in ci and 'pip install --quiet -e ".[dev' in ci


def test_every_idgen_variable_is_listed_in_the_command_line_reference():
    """The ``IDGEN_*`` variables the code reads (the package, the demo launcher, the test suite) are all
    named in one place, the command-line reference, with each flag default's variable in its table."""
    from idgen.application.hub import ENVIRONMENT

    sources = [*ROOT.glob("idgen/**/*.py"), ROOT / "app.py", *ROOT.glob("tests/*.py")]
    read = {name for path in sources for name in re.findall(r"\bIDGEN_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())}
    reference = (ROOT / "docs/reference/cli.md").read_text()
    table = reference.split("## Options shared by the commands")[1].split("**Which generator runs.**")[0]
    assert {variable for variable, _ in ENVIRONMENT.values()} <= read
    assert sorted(name for name in read if f"`{name}" not in table) == []
