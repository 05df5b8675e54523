"""Cancelling a long job (a dataset, a forgetting run) from another thread, without Gradio.

A :class:`CancelToken` is handed to the job; whoever wants it stopped calls :meth:`CancelToken.cancel`.
The job stops at its next *checkpoint*, raising :class:`JobCancelled`:

* every call of :func:`checked` progress (the actions report progress between phases), and
* inside :func:`checkpoints`, every forward call of a torch module made by the job's own thread (a
  denoising step, a recogniser batch, a text-encoder step), so a job stops within one network call
  however its inner loops are written.

:func:`optimizer_steps` reports each optimiser step a job's thread takes (a training or a forgetting
step), so a job can show per-step progress however deep in its code the training loop is.

A job writes its output into a staging folder (:func:`idgen.io.atomic_folder`) and renames it into
place only once finished, so a cancelled job leaves nothing half-written behind.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Optional


class JobCancelled(Exception):
    """The job was cancelled (not an input error: nothing for the user to fix)."""


class CancelToken:
    """Set once by :meth:`cancel`; :meth:`check` raises :class:`JobCancelled` from then on."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise JobCancelled("the job was cancelled")


def checked(progress: Callable[..., None], token: Optional[CancelToken]) -> Callable[..., None]:
    """``progress`` that first checks ``token`` (``progress`` itself when there is no token)."""
    if token is None:
        return progress

    def report(fraction, desc=None):
        token.check()
        progress(fraction, desc=desc)

    return report


_lock = threading.Lock()
_tokens: dict[int, CancelToken] = {}     # thread id → the token its job checks
_hook = None                             # the global forward pre-hook, present while any job runs


def _check_this_thread(module, args):
    token = _tokens.get(threading.get_ident())
    if token is not None:
        token.check()


@contextmanager
def checkpoints(token: Optional[CancelToken]):
    """While inside, every torch module called from this thread checks ``token`` before it runs.

    The check is a global forward pre-hook that only looks at jobs' own threads, installed while at
    least one job is inside (other threads pay one dictionary look-up per module call meanwhile)."""
    global _hook
    if token is None:
        yield
        return
    token.check()
    import torch

    ident = threading.get_ident()
    with _lock:
        previous = _tokens.get(ident)
        _tokens[ident] = token
        if _hook is None:
            _hook = torch.nn.modules.module.register_module_forward_pre_hook(_check_this_thread)
    try:
        yield
    finally:
        with _lock:
            if previous is None:
                del _tokens[ident]
            else:
                _tokens[ident] = previous
            if not _tokens and _hook is not None:
                _hook.remove()
                _hook = None


@contextmanager
def optimizer_steps(on_step: Callable[[], None]):
    """While inside, ``on_step()`` runs after every optimiser step taken in this thread (a global
    torch hook that ignores other threads); an exception it raises (:class:`JobCancelled`) stops the job."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    ident = threading.get_ident()

    def after_step(optimizer, args, kwargs):
        if threading.get_ident() == ident:
            on_step()

    hook = register_optimizer_step_post_hook(after_step)
    try:
        yield
    finally:
        hook.remove()
