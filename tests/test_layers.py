"""The package's layers import one way: every ``import`` of an idgen module, including the ones inside
functions, points at the importer's own part or at a lower layer. docs/development.md explains the
picture; a new upward import fails here with the file, the line and both layers named."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A part may import its own modules and the parts of lower layers, never a part of its
#: own layer or above (parts of one layer are independent of each other).
LAYERS = [
    {"errors", "quiet"},                                # the exception types; third-party log noise filtered
    {"idgen", "io", "config", "identity"},              # core: atomic files, config loading, identity maths
    {"models"},                                         # network definitions (recogniser backbones, heads)
    {"faces"},                                          # detect, align, embed
    {"pipelines", "recognition"},                       # diffusers pipelines; recogniser data and trainers
    {"testing"},                                        # tiny random models for tests, --tiny and *-tiny presets
    {"training", "synth", "unlearn", "edit", "eval", "guard"},
    {"application"},                                    # what the CLI and the demo share (no gradio)
    {"cli", "demo"},                                    # the command line; the Gradio page
]
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    """Dotted name of a source file; ``pipelines/`` installs as ``idgen.pipelines``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "pipelines":
        parts = ["idgen", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str, importer_file: Path | None = None) -> str | None:
    """The layer part a dotted idgen name belongs to (``None`` outside idgen). ``__main__`` modules
    are entry points (``python -m idgen.synth``): they belong with the command line."""
    names = module.split(".")
    if names[0] != "idgen":
        return None
    if importer_file is not None and importer_file.name == "__main__.py":
        return "cli"
    return names[1] if len(names) > 1 else "idgen"


def imported_modules(path: Path, name: str | None = None):
    """``(line, dotted name)`` of every import in the file (module ``name``), relative ones resolved."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield node.lineno, module
            for alias in node.names:   # `from idgen import x` / `from . import x` may name a submodule
                yield node.lineno, f"{module}.{alias.name}"


def source_files():
    return sorted([*(ROOT / "idgen").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")])


def test_every_part_is_in_a_layer():
    parts = {part_of(module_name(path), path) for path in source_files()}
    assert parts <= set(LAYER_OF), f"parts missing from LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_imports_point_down_only():
    upward = []
    for path in source_files():
        importer = part_of(module_name(path), path)
        for line, module in imported_modules(path):
            target = part_of(module)
            if target is None or target == importer or target not in LAYER_OF:
                continue   # outside idgen, within the part, or `from idgen.x import name` (a name, not a module)
            if LAYER_OF[target] >= LAYER_OF[importer]:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {importer} (layer {LAYER_OF[importer]}) imports "
                              f"{module} ({target}, layer {LAYER_OF[target]})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The walk covers function bodies (the old cycles hid there) and resolves relative imports."""
    source = tmp_path / "probe.py"
    source.write_text("import os\n\ndef f():\n    from ..cli import main\n")
    found = list(imported_modules(source, "idgen.faces.probe"))
    assert (4, "idgen.cli") in found and part_of("idgen.cli") == "cli"
    assert LAYER_OF["cli"] > LAYER_OF["faces"]
