"""SpeechBrain datasets for the SLU recipe, built from the manifest rows of :func:`slukd.data.slurp.prepare_slurp`.

Each item yields ``id``, ``sig`` (mono waveform [S] at ``sample_rate``, read by :func:`slukd.data.audio.load_audio`:
resampled, down-mixed and cropped to ``max_seconds`` as needed), ``tokens_bos`` ([bos] + y), ``tokens_eos``
(y + [eos]), ``tokens`` (y, for CTC) and ``is_memory`` (1 for rehearsal items, else 0). Batches are SpeechBrain
``PaddedBatch`` (relative lengths). Audio paths have ``$data_root`` replaced by the corpus folder.

:func:`check_split_audio` decodes every recording of the manifests once at the start of a run (cached in the run
folder) and :func:`drop_bad_audio` removes the unusable ones (or raises :class:`BadAudioError`), so a corrupt file
costs a line in the run's ``audio_check.json`` instead of a crash hours into training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import speechbrain as sb
import torch

from slukd.data.audio import AUDIO_CACHE, AUDIO_CHECK_NAME, BadAudioError, check_split_audio, drop_bad_audio
from slukd.data.slurp import SlurpFormatError, read_manifest

logger = logging.getLogger(__name__)

__all__ = ["AUDIO_CHECK_NAME", "BadAudioError", "audio_path", "make_dataset", "check_split_audio", "drop_bad_audio",
           "ManifestError", "read_manifest_checked"]  # fmt: skip


def audio_path(row: dict, data_root: str | os.PathLike) -> str:
    """The file of a manifest row (``$data_root`` replaced)."""
    return str(row["wav"]).replace("$data_root", str(data_root))


def make_dataset(
    rows: Sequence[dict],
    data_root: str,
    tokenizer,
    memory_ids: Iterable[str] = (),
    with_audio: bool = True,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
) -> sb.dataio.dataset.DynamicItemDataset:
    """A dataset over ``rows`` (manifest dicts with ID, wav, duration, target, ...); ``memory_ids`` flags items of
    the rehearsal memory. The item order is the row order. Audio longer than ``max_seconds`` is cropped."""
    mem = set(memory_ids)
    data = {}
    for r in rows:
        rid = r["ID"]
        if rid in data:
            raise ValueError(f"duplicate item ID {rid!r} in the dataset rows")
        data[rid] = {
            "wav": audio_path(r, data_root),
            "duration": float(r.get("duration", 0.0)),
            "target": r["target"],
            "is_memory": int(rid in mem),
        }
    ds = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return AUDIO_CACHE.load(wav, sample_rate, max_seconds)

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


#: a malformed manifest row (the message names the file and line): the SLURP data layer's error
ManifestError = SlurpFormatError


def read_manifest_checked(path: str | os.PathLike) -> list[dict]:
    """Rows of a SLURP manifest (:func:`slukd.data.slurp.read_manifest`: ``entities`` decoded, ``duration`` a float;
    a malformed row raises :class:`ManifestError` naming ``file:line``; delete the run's ``manifests/`` folder to
    have it rebuilt)."""
    return read_manifest(path)
