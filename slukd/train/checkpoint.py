"""SpeechBrain checkpoints that count only once fully written."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import speechbrain as sb
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from slukd.utils.io import atomic_write_text

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
        ckpt = super().save_checkpoint(*args, **kwargs)
        if ckpt is not None:
            atomic_write_text(Path(ckpt.path) / COMPLETE_MARKER, "ok\n")
        # under DDP every process must see the marker before any of them lists checkpoints (the deletion that
        # follows is decided on each process and holds collectives: different lists would deadlock)
        ddp_barrier()
        return ckpt

    def list_checkpoints(self):
        return [c for c in super().list_checkpoints() if (Path(c.path) / COMPLETE_MARKER).is_file()]
