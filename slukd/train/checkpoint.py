"""SpeechBrain checkpoints that count only once fully written."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import speechbrain as sb
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from slukd.utils.io import WriteError, atomic_write_text

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"


class CompleteCheckpointer(sb.utils.checkpoints.Checkpointer):
    """A SpeechBrain Checkpointer whose checkpoints count only once fully written.

    SpeechBrain writes ``CKPT.yaml`` first and the parameter files after it, so a job killed while saving leaves a
    folder that ``recover_if_possible`` would try (and fail) to load. Here a ``COMPLETE`` marker is written last;
    folders without it are ignored and deleted (main process) when the checkpointer is created.
    """

    def __init__(self, checkpoints_dir, *args, **kwargs):
        super().__init__(checkpoints_dir, *args, **kwargs)
        if if_main_process() and self.checkpoints_dir.is_dir():
            for d in sorted(self.checkpoints_dir.glob("CKPT+*")):
                if d.is_dir() and not (d / COMPLETE_MARKER).is_file():
                    logger.warning("removing incomplete checkpoint %s (interrupted while saving)", d)
                    shutil.rmtree(d)

    def save_checkpoint(self, *args, **kwargs):
        before = set(self.checkpoints_dir.glob("CKPT+*")) if self.checkpoints_dir.is_dir() else set()
        try:
            ckpt = super().save_checkpoint(*args, **kwargs)
        except (OSError, RuntimeError) as err:
            raise self._write_error(err, before) from err
        if ckpt is not None:
            atomic_write_text(Path(ckpt.path) / COMPLETE_MARKER, "ok\n")
        # under DDP every process must see the marker before any of them lists checkpoints (the deletion that
        # follows is decided on each process and holds collectives: different lists would deadlock)
        ddp_barrier()
        return ckpt

    def list_checkpoints(self):
        return [c for c in super().list_checkpoints() if (Path(c.path) / COMPLETE_MARKER).is_file()]

    def _write_error(self, err: BaseException, before: set[Path]) -> BaseException:
        """A failed save (disk full, read-only folder, ...) as one :class:`WriteError` naming the checkpoint folder
        and the cause; the half-written folder is removed (the checkpoints before it are untouched). Errors that are
        not about writing are returned as they are."""
        if isinstance(err, WriteError):
            return err
        torch_writer = isinstance(err, RuntimeError) and any(
            s in str(err) for s in ("inline_container", "PytorchStreamWriter", "file write failed")
        )
        if isinstance(err, RuntimeError) and not torch_writer:
            return err
        new = sorted(set(self.checkpoints_dir.glob("CKPT+*")) - before) if self.checkpoints_dir.is_dir() else []
        where = new[-1] if new else self.checkpoints_dir
        if isinstance(err, OSError) and err.strerror:
            code, reason = err.errno, err.strerror
        else:  # torch's writer does not say why: the usual reason is a full disk
            try:
                full = shutil.disk_usage(self.checkpoints_dir).free < 1 << 20
            except OSError:
                full = False
            code = errno.ENOSPC if full else errno.EIO
            reason = "No space left on device" if full else f"write failed ({str(err).splitlines()[0][:200]})"
        for d in new:
            shutil.rmtree(d, ignore_errors=True)
        return WriteError(code, f"cannot write checkpoint {where}: {reason} (earlier checkpoints are kept)")
