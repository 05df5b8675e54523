"""Third-party noise: importing the pipelines prints none of the messages idgen filters, and the filter
drops only those messages."""

from __future__ import annotations

import logging
import subprocess
import sys

from idgen.quiet import NOISE, silence_third_party_noise


def test_importing_the_pipelines_prints_no_third_party_noise():
    code = "import idgen.pipelines, idgen.pipelines.pipeline_infiniteyou, idgen.pipelines.pipeline_instantid"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert all(text not in run.stderr for _, text in NOISE), run.stderr


def test_the_filter_drops_only_the_named_messages(caplog):
    silence_third_party_noise()
    silence_third_party_noise()   # idempotent: one filter per logger
    name, text = NOISE[0]
    logger = logging.getLogger(name)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning("`CLIPImageProcessor` %s; falling back", text)
        logger.warning("a message a user needs")
    assert [r.getMessage() for r in caplog.records] == ["a message a user needs"]
