"""Atomic file writes, the only way results, checkpoints and records are written.

Every writer goes through :func:`atomic_write_bytes`'s scheme: write a temporary file in the target's folder,
fsync, ``os.replace`` it into place. A reader therefore sees the old file or the new one, never half of one. Files
get the permissions a plain ``open()`` would give them (``0o666`` minus the user's umask), so a folder shared by a
research group stays readable. A failed write (disk full, read-only folder, permission denied) raises
:class:`WriteError` naming the path and the reason, and leaves no temporary file behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from slukd.utils.faults import on_file_write

__all__ = [
    "WriteError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_torch_save",
]


class WriteError(OSError):
    """A file could not be written; the message names the path and the cause (disk full, read-only, ...)."""

    def __str__(self) -> str:  # the message alone ("cannot write PATH: CAUSE"), without OSError's "[Errno N]"
        return self.strerror if isinstance(self.strerror, str) else super().__str__()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file next to ``path``, fsync it and rename it to ``path``.

    The file ends with mode ``0o666 & ~umask`` (``mkstemp`` would leave 0600). Raises :class:`WriteError` naming
    ``path`` when the folder cannot be created or the data cannot be written.
    """
    path = Path(path)
    on_file_write()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the path."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation). Returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write one JSON object per line atomically (overwrites, never appends)."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory first, then written like any other file)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
