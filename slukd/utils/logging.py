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


def _quiet_speechbrain_notices(record: logging.LogRecord) -> bool:
    """Drop SpeechBrain's notices printed at every import (its quirks, two INFO lines; "torchvision is not available
    - cannot save figures": slukd plots with matplotlib) from stderr, so a one-line error stays one line. (SpeechBrain
    sets its loggers' levels when their modules are imported, so a level set here would not hold.)"""
    if record.name == "speechbrain.utils.quirks" and record.levelno <= logging.INFO:
        return False
    return not (record.name == "speechbrain.utils.train_logger" and "torchvision" in str(record.msg))


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
        handler.addFilter(_quiet_speechbrain_notices)
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


def log_to_files(name: str, level: int, msg: str, exc_info: BaseException | None = None) -> None:
    """Write one record only to the log files of the root logger (not to stderr): for an error that the entry
    point prints once itself."""
    record = logging.getLogger(name).makeRecord(
        name, level, "(slukd)", 0, msg, (), (type(exc_info), exc_info, exc_info.__traceback__) if exc_info else None
    )
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)
