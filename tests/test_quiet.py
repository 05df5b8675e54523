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


def test_writing_parquet_shards_shows_no_datasets_bars_and_leaves_them_as_they_were(tmp_path, capsys):
    """``write_parquet`` writes each shard with ``datasets``, which draws a bar per file: none is shown,
    and ``datasets``' bars are shown again afterwards (and stay hidden where a user hid them)."""
    import datasets.utils as datasets_utils

    from idgen.synth.writers import write_parquet

    records = [{"file": f"images/id000000/{k}.jpg", "label": 0, "identity": "id000000", "index": k, "seed": k,
                "attempt": 0, "similarity": None, "perturbation": 0.0} for k in range(3)]
    for hidden in (False, True):
        (datasets_utils.disable_progress_bars if hidden else datasets_utils.enable_progress_bars)()
        folder = tmp_path / str(hidden)
        folder.mkdir()
        assert len(write_parquet(records, lambda record: b"\xff\xd8", folder, shard_size=2)) == 2
        assert "Creating parquet" not in capsys.readouterr().err
        assert datasets_utils.are_progress_bars_disabled() is hidden
    datasets_utils.enable_progress_bars()
