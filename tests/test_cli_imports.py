"""The ``idgen`` command line stays light: building its parser, ``--help`` and the subcommands that
are not the demo import neither :mod:`idgen.demo` nor gradio (checked in a fresh interpreter, where
nothing else has imported them yet)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("gradio", "idgen.demo")


def _loaded_after(snippet: str) -> dict:
    """Run ``snippet`` in a new interpreter; which of :data:`HEAVY` it left in ``sys.modules``."""
    code = (f"import json, sys\n{snippet}\n"
            f"print('LOADED=' + json.dumps({{name: name in sys.modules for name in {HEAVY!r}}}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("LOADED=")]
    return json.loads(line[len("LOADED="):])


def test_python_m_idgen_cli_help_does_not_import_gradio():
    loaded = _loaded_after("import runpy\nsys.argv = ['idgen', '--help']\n"
                           "try:\n    runpy.run_module('idgen.cli', run_name='__main__')\n"
                           "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n")
    assert loaded == dict.fromkeys(HEAVY, False), loaded


def test_every_subcommand_help_does_not_import_gradio():
    from idgen.cli import COMMANDS

    assert COMMANDS  # every registered command, including generate and edit (which take the model flags)
    commands = [["embed"], ["eval", "verify"], ["edit", "replace"], ["edit", "restyle"], ["recognizer", "train"],
                ["forget"], ["dataset", "generate"], ["generate"]]
    loaded = _loaded_after(
        "from idgen.cli import main\n"
        f"for argv in {commands!r}:\n"
        "    try:\n        main(argv + ['--help'])\n"
        "    except SystemExit as exit:\n        assert exit.code == 0, (argv, exit.code)\n")
    assert loaded == dict.fromkeys(HEAVY, False), loaded


def test_running_analysis_commands_does_not_import_gradio(tmp_path):
    """Not just the parser: the handlers of embed and eval run (and fail on their empty inputs) gradio-free."""
    loaded = _loaded_after(
        "from idgen.cli import main\n"
        f"assert main(['embed', {str(tmp_path)!r}, '--output-file', {str(tmp_path / 'e.safetensors')!r}]) == 1\n"
        f"assert main(['eval', 'verify', '--pairs', {str(tmp_path / 'pairs.txt')!r}, '--images', {str(tmp_path)!r}]) == 1\n")
    assert loaded == dict.fromkeys(HEAVY, False), loaded


def test_the_model_flags_help_quotes_the_one_table_of_variables_and_defaults():
    """``idgen generate``/``edit`` and ``python app.py`` take their model flags from
    :mod:`idgen.cli.common`, whose help is written from :data:`idgen.application.hub.ENVIRONMENT`
    (the table that resolves the values): the help cannot drift from what the flags do."""
    import argparse

    from idgen.application.hub import ENVIRONMENT
    from idgen.cli.common import add_model_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    helps = {action.dest: action.help for action in parser._actions}
    for name in ("model", "base", "arc2face", "instantid", "instantid_base", "infiniteyou", "infiniteyou_base",
                 "infiniteyou_variant", "lcm_lora", "lcm_lora_sdxl"):
        variable, default = ENVIRONMENT[name]
        assert f"${variable}" in helps[name], name
        assert default is None or f"default {default}" in helps[name], name
