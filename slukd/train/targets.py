"""Teacher targets of both recipes, made by one function: :func:`teacher_targets`.

The SLU recipe distils the model of task t-1 on the rehearsal memory (beam hypotheses for seq-KD); the captioning
recipe distils the frozen teacher on every training and audio-only clip (hypotheses and/or pooled embeddings).
Both call :func:`teacher_targets`, which

- keys every item by its ID and its data (:func:`slukd.distill.targets.audio_digest`: the audio bytes, the sample
  rate and the crop), so a clip replaced under the same ID is computed anew, never read from the cache;
- runs the teacher exactly as it is evaluated (beam, length limit, precision) with every item encoded at its own
  length (:func:`slukd.train.decode.encode_unpadded`): an item's targets do not depend on its batch;
- computes on the main process only (two runs filling one cache take turns), then every process reads the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from slukd.distill.targets import TeacherTargets, audio_digest
from slukd.train.decode import teacher_target_fn

__all__ = ["teacher_targets"]


def _collate(items):
    from speechbrain.dataio.batch import PaddedBatch

    return PaddedBatch(items)


def teacher_targets(
    teacher,
    dataset,
    audio_files: Mapping[str, str | Path],
    cache_dir: str | Path,
    config: Mapping[str, Any],
    *,
    beam_size: int,
    max_len: int,
    precision: str | None,
    device: str,
    batch_size: int,
    hyps: bool = True,
    emb: bool = False,
    loading: tuple[Any, ...] = (),
    length_penalty: float | None = None,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> TeacherTargets:
    """The teacher's targets of every item of ``dataset`` (items with ``id`` and ``sig``), cached in
    ``cache_dir`` under the teacher's fingerprint and ``config`` (the settings that change the targets).

    ``audio_files``: item ID -> its audio file (the item's data digest is that file's bytes plus ``loading``, the
    settings that change the loaded waveform: sample rate, crop). Returns the loaded :class:`TeacherTargets` on
    every process; its ``hyps_of`` / ``emb_of`` give the targets by item ID.
    """
    from speechbrain.utils.distributed import if_main_process

    from slukd.utils.distributed import barrier

    item_data = {str(i): audio_digest(p, *loading) for i, p in audio_files.items()} if if_main_process() else {}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [item_data]
        torch.distributed.broadcast_object_list(box, src=0)
        item_data = box[0]
    targets = TeacherTargets(cache_dir, teacher.fingerprint, dict(config), hyps=hyps, emb=emb, item_data=item_data)
    compute = teacher_target_fn(teacher, beam_size, max_len, device, precision, hyps=hyps, emb=emb,
                                length_penalty=length_penalty)  # fmt: skip
    if if_main_process() and targets.missing(list(item_data)):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=_collate)
        targets.ensure(loader, compute, total=len(loader), on_batch=on_batch, progress=progress)
    barrier()
    targets.reload()
    return targets
