"""Third-party log messages that idgen's own imports cause and that a user cannot act on.

Importing the pipelines makes transformers fall back to its PIL image processors when torchvision is
absent (idgen does not use torchvision) and makes bitsandbytes say that an optional CPU kernel package
is missing. Both are logged as warnings on every command. :func:`silence_third_party_noise` drops
exactly those messages, matched by logger and text; every other message of those libraries passes.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

#: (logger name, text that identifies the message)
NOISE = (
    ("transformers.utils.import_utils", "requires torchvision (not installed)"),
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def silence_third_party_noise() -> None:
    """Install the filters (once; calling again changes nothing)."""
    for name, text in NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))


def hide_loading_bars() -> None:
    """Turn off diffusers' and transformers' progress bars for loading checkpoints, for a command that
    shows one progress bar of its own (the bars of downloads stay)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


@contextmanager
def datasets_bars_hidden():
    """Hide ``datasets``' progress bars inside the block (its bar for every parquet file written), and
    show them again afterwards if they were shown before."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    shown = not are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            enable_progress_bars()
