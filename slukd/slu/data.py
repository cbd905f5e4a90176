"""SpeechBrain datasets for the SLU recipe, built from the manifest rows of :func:`slukd.data.slurp.prepare_slurp`.

Each item yields ``id``, ``sig`` (waveform [S]), ``tokens_bos`` ([bos] + y), ``tokens_eos`` (y + [eos]),
``tokens`` (y, for CTC) and ``is_memory`` (1 for rehearsal items, else 0). Batches are SpeechBrain ``PaddedBatch``
(relative lengths). Audio paths have ``$data_root`` replaced by the corpus folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import speechbrain as sb
import torch
from speechbrain.dataio.dataio import read_audio

logger = logging.getLogger(__name__)


def make_dataset(
    rows: Sequence[dict],
    data_root: str,
    tokenizer,
    memory_ids: Iterable[str] = (),
    with_audio: bool = True,
) -> sb.dataio.dataset.DynamicItemDataset:
    """A dataset over ``rows`` (manifest dicts with ID, wav, duration, target, ...); ``memory_ids`` flags items of
    the rehearsal memory. The item order is the row order."""
    mem = set(memory_ids)
    data = {}
    for r in rows:
        rid = r["ID"]
        if rid in data:
            raise ValueError(f"duplicate item ID {rid!r} in the dataset rows")
        data[rid] = {
            "wav": str(r["wav"]).replace("$data_root", str(data_root)),
            "duration": float(r.get("duration", 0.0)),
            "target": r["target"],
            "is_memory": int(rid in mem),
        }
    ds = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio(wav)

    @sb.utils.data_pipeline.takes("target")
    @sb.utils.data_pipeline.provides("tokens_bos", "tokens_eos", "tokens")
    def text_pipeline(target):
        ids = tokenizer.encode(target)
        yield torch.LongTensor([tokenizer.bos_id] + ids)
        yield torch.LongTensor(ids + [tokenizer.eos_id])
        yield torch.LongTensor(ids)

    keys = ["id", "tokens_bos", "tokens_eos", "tokens", "is_memory"]
    ds.add_dynamic_item(text_pipeline)
    if with_audio:
        ds.add_dynamic_item(audio_pipeline)
        keys.append("sig")
    ds.set_output_keys(keys)
    return ds
