"""SpeechBrain datasets of the captioning recipe, built from caption manifest rows
(:func:`slukd.data.captions.read_manifest`: ``ID``, ``wav``, ``duration``, ``captions``).

Items provide ``id``, ``sig`` (mono waveform [S] at ``sample_rate`` through :func:`slukd.data.audio.load_audio`:
resampled, down-mixed, cropped to ``max_seconds``) and, for captioned clips, ``tokens_bos`` ([bos] + y),
``tokens_eos`` (y + [eos]) and ``tokens`` (y) of ONE reference caption, chosen per epoch: the index is drawn from
(seed, epoch, clip ID), so every reference gets used and a resumed epoch sees the same captions. The current epoch
is read from a shared :class:`EpochClock` that the Brain advances; DataLoader workers are started per epoch, so
they see it too. Audio-only items carry the teacher's pseudo-caption as their target instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import speechbrain as sb
import torch

from slukd.data.audio import AUDIO_CACHE

__all__ = ["EpochClock", "choose_caption", "caption_dataset", "pseudo_caption_dataset"]


class EpochClock:
    """The current training epoch, shared by the Brain (writer) and the datasets (readers)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed, self.epoch = int(seed), 0


def choose_caption(item_id: str, captions: Sequence[str], seed: int, epoch: int) -> str:
    """One reference of a clip for one epoch: index drawn from (seed, epoch, crc32(clip ID))."""
    if not captions:
        raise ValueError(f"clip {item_id} has no caption but is in a captioned training set")
    h = zlib.crc32(item_id.encode("utf-8"))
    return captions[int(np.random.default_rng([seed, epoch, h]).integers(len(captions)))]


def _base_dataset(rows: Sequence[dict[str, Any]], sample_rate: int, max_seconds: float | None, extra: dict):
    data = {}
    for r in rows:
        if r["ID"] in data:
            raise ValueError(f"duplicate clip ID {r['ID']!r} in the dataset rows")
        data[r["ID"]] = {"wav": r["wav"], "duration": float(r["duration"]), **extra.get(r["ID"], {})}
    ds = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return AUDIO_CACHE.load(wav, sample_rate, max_seconds)

    ds.add_dynamic_item(audio_pipeline)
    return ds


def _token_items(ds, key: str, to_ids: Callable[[Any, str], list[int]], bos: int, eos: int) -> None:
    @sb.utils.data_pipeline.takes("id", key)
    @sb.utils.data_pipeline.provides("tokens_bos", "tokens_eos", "tokens")
    def text_pipeline(item_id, value):
        ids = to_ids(value, item_id)
        yield torch.LongTensor([bos] + ids)
        yield torch.LongTensor(ids + [eos])
        yield torch.LongTensor(ids)

    ds.add_dynamic_item(text_pipeline)


def caption_dataset(
    rows: Sequence[dict[str, Any]],
    vocab,
    clock: EpochClock | None = None,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    sort: bool = False,
):
    """Clips with audio and, with a ``clock``, the epoch's chosen reference as target (training); without a clock,
    the first reference (validation loss). ``sort``: ordered by duration (decoding: less padding)."""
    extra = {r["ID"]: {"captions": list(r["captions"])} for r in rows}
    ds = _base_dataset(rows, sample_rate, max_seconds, extra)

    def to_ids(captions, item_id):
        cap = choose_caption(item_id, captions, clock.seed, clock.epoch) if clock is not None else captions[0]
        return vocab.encode(cap, add_eos=False)

    _token_items(ds, "captions", to_ids, vocab.bos_id, vocab.eos_id)
    ds.set_output_keys(["id", "sig", "tokens_bos", "tokens_eos", "tokens"])
    return ds.filtered_sorted(sort_key="duration") if sort else ds


def audio_dataset(
    rows: Sequence[dict[str, Any]], sample_rate: int = 16000, max_seconds: float | None = None, sort: bool = True
):
    """Clips with audio only (decoding, teacher targets); ordered by duration unless ``sort`` is False."""
    ds = _base_dataset(rows, sample_rate, max_seconds, {})
    ds.set_output_keys(["id", "sig"])
    return ds.filtered_sorted(sort_key="duration") if sort else ds


def pseudo_caption_dataset(
    rows: Sequence[dict[str, Any]],
    hyps: dict[str, list[int]],
    bos: int,
    eos: int,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
):
    """Audio-only clips whose target is the teacher's pseudo-caption (token ids from the teacher-target cache)."""
    missing = [r["ID"] for r in rows if r["ID"] not in hyps]
    if missing:
        raise KeyError(f"no teacher pseudo-caption for audio-only clip {missing[0]!r} ({len(missing)} missing)")
    extra = {r["ID"]: {"hyp": list(hyps[r["ID"]])} for r in rows}
    ds = _base_dataset(rows, sample_rate, max_seconds, extra)
    _token_items(ds, "hyp", lambda hyp, _id: list(hyp), bos, eos)
    ds.set_output_keys(["id", "sig", "tokens_bos", "tokens_eos", "tokens"])
    return ds
