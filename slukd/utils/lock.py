"""One writer per run folder: an exclusive lock that a run holds on its output folder while it works.

The lock is ``fcntl.flock`` on ``<run folder>/.slukd_run.lock``; the file names the holder (pid, host, command,
start time) for the message another process gets. The kernel drops the lock when the holder exits, however it
exits (``kill -9`` included), so a stale file never blocks a rerun. flock works across processes on one machine and
on file systems that support it across machines (NFSv4, Lustre, ...).

- A run (:func:`hold_run_lock`, called by :func:`slukd.experiment.start_experiment` on the main process) takes the
  lock before it writes anything into its folder; when another process holds it, the run stops with one line
  naming the holder (:class:`RunLockedError`).
- ``slukd sweep`` takes a run's lock itself before deciding whether the run is finished (:func:`try_lock`); a run
  that another process is training is left for later and checked again once that process is done, so two sweeps
  into one folder train each run once. The sweep hands its lock to the recipe process it starts (the open file is
  inherited, named by ``SLUKD_RUN_LOCK_FD``), so there is no moment in which a third process could take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from slukd.utils.io import WriteError

__all__ = ["LOCK_NAME", "FD_ENV", "RunLockedError", "RunLock", "try_lock", "hold_run_lock", "holder_of", "release_all"]

LOCK_NAME = ".slukd_run.lock"
#: environment variable naming an inherited, already locked file descriptor of the run's lock (set by the sweep)
FD_ENV = "SLUKD_RUN_LOCK_FD"

_held: dict[str, RunLock] = {}  # run folders this process holds (kept open for the life of the process)


class RunLockedError(RuntimeError):
    """Another process is working in the run folder; the message names it."""


def holder_of(folder: str | os.PathLike) -> str:
    """The holder recorded in a folder's lock file, in words ("pid 12 on host h since 2026-01-01 10:00:00 UTC:
    python recipes/x.py ..."), or "another process" when the file says nothing readable."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["started"])))
        return f"pid {info['pid']} on host {info['host']} since {since}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunLock:
    """An exclusive lock on a run folder (see the module docstring). ``fd``: an inherited descriptor of the lock
    file that is already locked (the sweep's hand-over)."""

    def __init__(self, folder: str | os.PathLike, fd: int | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd = fd

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock (wait for it with ``blocking``); True when held. Records this process as the holder."""
        if self.fd is None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:  # a read-only or full output folder: one line naming the path
                raise WriteError(err.errno, f"cannot write {self.path}: {err.strerror or err}") from err
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False
        self._write_holder()
        return True

    def _write_holder(self, command: str | None = None) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
            "started": time.time(),
        }
        data = (json.dumps(info) + "\n").encode("utf-8")
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError:  # a full disk: the lock holds all the same; only its holder's name is not recorded
            pass

    def release(self) -> None:
        """Give the lock back (closing the file; the kernel does the same when the process ends)."""
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def try_lock(folder: str | os.PathLike) -> RunLock | None:
    """The folder's lock when no other process holds it, else None (never waits)."""
    lock = RunLock(folder)
    return lock if lock.acquire(blocking=False) else None


def _inherited(folder: Path) -> RunLock | None:
    """The lock handed over by a sweep (``SLUKD_RUN_LOCK_FD``) when it is this folder's lock file."""
    fd = os.environ.pop(FD_ENV, None)
    if not fd:
        return None
    try:
        fd_i = int(fd)
        st, own = os.fstat(fd_i), os.stat(folder / LOCK_NAME)
    except (ValueError, OSError):
        return None
    if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
        os.close(fd_i)
        return None
    return RunLock(folder, fd=fd_i)


def hold_run_lock(folder: str | os.PathLike) -> RunLock:
    """Hold the run folder's lock for the rest of this process; :class:`RunLockedError` naming the holder when
    another process has it. Idempotent within a process."""
    folder = Path(folder).resolve()
    if str(folder) in _held:
        return _held[str(folder)]
    lock = _inherited(folder) or RunLock(folder)
    if not lock.acquire(blocking=False):
        raise RunLockedError(
            f"{folder} is in use by another run ({holder_of(folder)}); wait for it to finish or use another "
            "output folder"
        )
    _held[str(folder)] = lock
    return lock


def release_all() -> None:
    """Give back every run-folder lock this process holds (end of a recipe's main; tests between runs)."""
    while _held:
        _held.popitem()[1].release()
