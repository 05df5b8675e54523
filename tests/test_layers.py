"""The package's layers import one way: every ``import`` of an idgen module, including the ones inside
functions, points at the importer's own part or at a lower layer, and no two parts import each other
through any chain. docs/development.md explains the picture; a new upward import fails here with the
file, the line and both layers named, and an import cycle with every link of it."""

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


def module_name(path: Path, root: Path = ROOT) -> str:
    """Dotted name of a source file under ``root``; ``pipelines/`` installs as ``idgen.pipelines``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "pipelines":
        parts = ["idgen", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    """The layer part a dotted idgen name belongs to (``None`` outside idgen)."""
    names = module.split(".")
    if names[0] != "idgen":
        return None
    return names[1] if len(names) > 1 else "idgen"


def imported_modules(path: Path, name: str):
    """``(line, dotted name)`` of every import in the file (module ``name``), at any depth (function
    bodies included), relative ones resolved; ``importlib.import_module("idgen.…")`` with a literal
    name counts as an import."""
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
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def source_files(root: Path = ROOT) -> list[Path]:
    return sorted([*(root / "idgen").rglob("*.py"), *(root / "pipelines").rglob("*.py")])


def part_imports(root: Path = ROOT):
    """``(where, importer part, imported part, module)`` for every import of another idgen part,
    ``where`` being ``file:line`` (one per line and part). Skipped: imports from outside idgen, within
    the part, and ``from idgen.x import name`` naming a name, not a module."""
    for path in source_files(root):
        name = module_name(path, root)
        importer, seen = part_of(name), set()
        for line, module in imported_modules(path, name):
            target = part_of(module)
            if target in LAYER_OF and importer in LAYER_OF and target != importer and (line, target) not in seen:
                seen.add((line, target))
                yield f"{path.relative_to(root)}:{line}", importer, target, module


def upward_imports(root: Path = ROOT) -> list[str]:
    """One line per import that points at the importer's own layer or above."""
    return [f"{where}: {importer} (layer {LAYER_OF[importer]}) imports {module} ({target}, layer {LAYER_OF[target]})"
            for where, importer, target, module in part_imports(root)
            if LAYER_OF[target] >= LAYER_OF[importer]]


def import_cycles(root: Path = ROOT) -> list[str]:
    """Each cycle of parts that import each other, as ``a -> b -> a`` followed by one ``file:line``
    per link: the shortest cycle through every part that is on one, each cycle named once."""
    links: dict[str, dict[str, str]] = {}
    for where, importer, target, _ in part_imports(root):
        links.setdefault(importer, {}).setdefault(target, where)
    cycles = {}
    for start in sorted(links):
        path = shortest_path(links, start)
        if path:
            steps = list(zip(path, path[1:]))
            cycles.setdefault(frozenset(steps), " -> ".join(path) + "".join(
                f"\n    {a} -> {b}: {links[a][b]}" for a, b in steps))
    return list(cycles.values())


def shortest_path(links: dict[str, dict[str, str]], start: str) -> list[str] | None:
    """The shortest ``[start, ..., start]`` along ``links`` (breadth first), or None."""
    came_from, frontier = {}, [start]
    while frontier:
        following = []
        for part in frontier:
            for target in sorted(links.get(part, {})):
                if target == start:
                    path = [part]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = part
                    following.append(target)
        frontier = following
    return None


def test_every_part_is_in_a_layer():
    parts = {part_of(module_name(path)) for path in source_files()}
    assert parts <= set(LAYER_OF), f"parts missing from LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_imports_point_down_only():
    upward = upward_imports()
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycle_between_parts():
    cycles = import_cycles()
    assert not cycles, "parts that import each other (imports inside functions included):\n" + "\n".join(cycles)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The walk covers function bodies (the old cycles hid there) and resolves relative imports."""
    source = tmp_path / "probe.py"
    source.write_text("import os\n\ndef f():\n    from ..cli import main\n")
    found = list(imported_modules(source, "idgen.faces.probe"))
    assert (4, "idgen.cli") in found and part_of("idgen.cli") == "cli"
    assert LAYER_OF["cli"] > LAYER_OF["faces"]


def test_a_cycle_through_lazy_imports_is_named_link_by_link(tmp_path):
    """Imports inside functions, in a ``__main__`` module and through ``importlib.import_module`` all
    count: eval -> cli -> application -> eval is reported with the file and line of each link, and
    its upward link as an import against the layers."""
    files = {
        "idgen/eval/__main__.py": "def run():\n    from ..cli import main\n",
        "idgen/cli/__init__.py": "def main():\n    from ..application import hub\n",
        "idgen/application/hub.py": "import importlib\n\n\ndef load():\n    importlib.import_module('idgen.eval')\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pipelines").mkdir()

    assert import_cycles(tmp_path) == [
        "application -> eval -> cli -> application"
        "\n    application -> eval: idgen/application/hub.py:5"
        "\n    eval -> cli: idgen/eval/__main__.py:2"
        "\n    cli -> application: idgen/cli/__init__.py:2"]
    assert upward_imports(tmp_path) == [f"idgen/eval/__main__.py:2: eval (layer {LAYER_OF['eval']}) imports "
                                        f"idgen.cli (cli, layer {LAYER_OF['cli']})"]
