"""Fault injection for the resume tests, shared by both recipes.

``SLUKD_DIE_AT=<phase>[:<task>[:<n>]]`` makes :func:`maybe_die` SIGKILL the process at one point of a run, as a
crash or ``kill -9`` would: ``train:T:N`` at the N-th training batch of task T (counted in this process),
``targets:T:N`` after the N-th batch of teacher targets (pseudo-labels, embeddings), ``eval:T:N`` after the N-th
test batch, ``memory:T`` after task T is tested and before the continual plugins' ``after_task`` (memory update),
``report::N`` at the N-th file written inside the ``report`` :func:`fault_scope` (the run's
report). ``T`` is 1-based (captioning runs are task 1); an empty field matches anything.
Unset, the hook costs one environment lookup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator

logger = logging.getLogger(__name__)

DIE_ENV = "SLUKD_DIE_AT"


def maybe_die(phase: str, task: int | None = None, count: int | None = None) -> None:
    """SIGKILL this process when ``$SLUKD_DIE_AT`` names this point (see the module docstring); no-op when unset."""
    spec = os.environ.get(DIE_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != phase:
        return
    if len(parts) > 1 and parts[1] and task is not None and int(parts[1]) != task:
        return
    if len(parts) > 2 and parts[2] and count is not None and int(parts[2]) != count:
        return
    logger.warning("%s=%s: killing this process (SIGKILL) at %s task %s #%s", DIE_ENV, spec, phase, task, count)
    for h in logging.getLogger().handlers:
        h.flush()
    os.kill(os.getpid(), signal.SIGKILL)


_scope: list[list] = []  # [name, files written so far] of the innermost active fault scope


@contextlib.contextmanager
def fault_scope(name: str) -> Iterator[None]:
    """Within the block, every atomic file write (:mod:`slukd.utils.io`) is fault point ``<name>::N`` (N counts
    them from 1)."""
    _scope.append([name, 0])
    try:
        yield
    finally:
        _scope.pop()


def on_file_write() -> None:
    """Called by every atomic write: the write's fault point inside an active :func:`fault_scope`."""
    if _scope and os.environ.get(DIE_ENV):
        _scope[-1][1] += 1
        maybe_die(_scope[-1][0], None, _scope[-1][1])
