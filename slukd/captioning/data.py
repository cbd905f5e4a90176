"""Clip datasets and batching for captioning.

A batch is ``ClipBatch(ids, wavs [B, S] float32, wav_lens [B] relative, captions)``; ``captions[b]`` is the list of
reference captions of clip b ([] for audio-only clips). Order and caption choice are functions of (seed, epoch)
only, so a resumed epoch sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from slukd.data.audio import load_audio

logger = logging.getLogger(__name__)


@dataclass
class ClipBatch:
    ids: list[str]
    wavs: torch.Tensor
    wav_lens: torch.Tensor
    captions: list[list[str]]

    def to(self, device: str | torch.device) -> ClipBatch:
        return ClipBatch(self.ids, self.wavs.to(device), self.wav_lens.to(device), self.captions)


def load_wav(path: str, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 waveform through :func:`slukd.data.audio.load_audio`: other sample rates are resampled and
    multichannel audio is down-mixed (both counted and logged there), clips longer than ``max_seconds`` are cropped;
    missing, empty, truncated, non-audio or non-finite files raise an error naming the file."""
    wav, _ = load_audio(path, target_sr=sample_rate, max_seconds=max_seconds, long_policy="crop")
    return wav.numpy()


def collate(rows: list[dict[str, Any]], sample_rate: int = 16000, max_seconds: float | None = None) -> ClipBatch:
    """Read and zero-pad the clips of ``rows`` (manifest rows) into one batch."""
    wavs = [load_wav(r["wav"], sample_rate, max_seconds) for r in rows]
    longest = max(len(w) for w in wavs)
    out = torch.zeros(len(wavs), longest)
    for i, w in enumerate(wavs):
        out[i, : len(w)] = torch.from_numpy(w)
    lens = torch.tensor([len(w) / longest for w in wavs], dtype=torch.float32)
    return ClipBatch([r["ID"] for r in rows], out, lens, [list(r["captions"]) for r in rows])


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The item order of one epoch: a permutation drawn from (seed, epoch), or 0..n-1."""
    if not shuffle:
        return list(range(n))
    return np.random.default_rng([seed, epoch, 11]).permutation(n).tolist()


def iterate_batches(
    rows: list[dict[str, Any]],
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    sort_by_duration: bool = False,
) -> Iterator[ClipBatch]:
    """Batches of one epoch. ``sort_by_duration`` (evaluation) groups clips of similar length to save padding."""
    order = epoch_order(len(rows), seed, epoch, shuffle)
    if sort_by_duration:
        order = sorted(order, key=lambda i: (rows[i]["duration"], rows[i]["ID"]))
    for start in range(0, len(order), batch_size):
        yield collate([rows[i] for i in order[start : start + batch_size]], sample_rate, max_seconds)


def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def choose_captions(batch: ClipBatch, seed: int, epoch: int) -> list[str]:
    """One training caption per clip: index drawn from (seed, epoch, clip ID) so every reference gets used."""
    out = []
    for item_id, caps in zip(batch.ids, batch.captions):
        if not caps:
            raise ValueError(f"clip {item_id} has no caption but is in a captioned training set")
        h = zlib.crc32(item_id.encode("utf-8"))
        out.append(caps[int(np.random.default_rng([seed, epoch, h]).integers(len(caps)))])
    return out
