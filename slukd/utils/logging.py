"""Logging configuration. Library modules only create loggers; entry points call :func:`setup_logging` once."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_CONFIGURED = False
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record (never to a stream
    that was replaced and closed since, as test runners and notebooks do)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it once in __init__
        pass


class _RunLogHandler(logging.FileHandler):
    """The run's ``log.txt``. When the file cannot be written any more (disk full, read-only folder), one line on
    stderr names it and the cause, and the handler stops (instead of a traceback per log record); stderr keeps
    every record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            print(f"warning: cannot write {self.baseFilename}: {err.strerror or err}; logging to stderr only",
                  file=sys.stderr)  # fmt: skip
            logging.getLogger().removeHandler(self)
            return
        super().handleError(record)


def setup_logging(level: str | int | None = None, log_file: str | os.PathLike | None = None) -> None:
    """Configure the root logger once: a stderr handler and optionally a file handler.

    ``level`` defaults to the ``SLUKD_LOG_LEVEL`` environment variable or INFO. Calling it again only adds a
    file handler for a new ``log_file`` (so a recipe can log into its run folder after the CLI set things up).
    """
    global _CONFIGURED
    if level is None:
        level = os.environ.get("SLUKD_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not _CONFIGURED:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)
        _CONFIGURED = True
    if log_file is not None:
        path = Path(log_file).resolve()
        for h in root.handlers:
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path:
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = _RunLogHandler(path, encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)
