"""Robust audio loading, one place for both recipes: decode, check, resample, down-mix, crop.

:func:`load_audio` returns a mono float32 waveform ``[S]`` at ``target_sr`` and an :class:`AudioInfo`:

- errors (:class:`AudioError`, the message names the file and a reason code): ``missing`` (no such file),
  ``empty_file`` (0 bytes), ``unreadable`` (not audio / unknown format / header cut), ``truncated`` (the decoder
  fails mid-file, or a WAV whose data chunk is shorter than its header says), ``no_samples`` (0 frames),
  ``non_finite`` (NaN or inf samples, float WAV), ``too_long`` (longer than ``max_seconds`` with
  ``long_policy="error"``);
- handled and counted (:class:`AudioStats`, the first of each kind logged, the others only counted):
  ``resampled`` (another sample rate: ``torchaudio.functional.resample``), ``downmixed`` (several channels:
  mean over channels), ``cropped`` (longer than ``max_seconds`` with ``long_policy="crop"``: the first
  ``max_seconds`` are kept), ``silent`` (peak ``max|x| < silence_threshold``: kept as it is).

:func:`check_audio_files` decodes a list of files once (data preparation) and sorts them into good and bad, so a
corrupt file is found at the start of a run instead of hours into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

ERROR_REASONS = ("missing", "empty_file", "unreadable", "truncated", "no_samples", "non_finite", "too_long")
NOTE_KINDS = ("resampled", "downmixed", "cropped", "silent")
LONG_POLICIES = ("crop", "error")


class AudioError(ValueError):
    """An audio file that cannot be used. ``path`` and ``reason`` (one of :data:`ERROR_REASONS`) are attributes;
    the message starts with the path."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {detail} ({reason})")


@dataclass
class AudioInfo:
    """What :func:`load_audio` found: the file's own rate, channels and length, and what was done to it."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    seconds: float
    resampled: bool = False
    downmixed: bool = False
    cropped: bool = False
    silent: bool = False


@dataclass
class AudioStats:
    """Counts of handled conditions (:data:`NOTE_KINDS`); the first occurrence of each kind is logged (INFO)."""

    counts: Counter = field(default_factory=Counter)
    logged: set = field(default_factory=set)

    def note(self, kind: str, path: str, detail: str) -> None:
        self.counts[kind] += 1
        if kind not in self.logged:
            self.logged.add(kind)
            logger.info("audio %s: %s (%s); further ones are only counted", kind, path, detail)

    def as_dict(self) -> dict[str, int]:
        return {k: int(self.counts.get(k, 0)) for k in NOTE_KINDS}

    def reset(self) -> None:
        self.counts.clear()
        self.logged.clear()


#: process-wide statistics used when no ``stats`` object is given
AUDIO_STATS = AudioStats()


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE file declares in its ``data`` chunk header and the bytes actually present, as the
    number of frames missing (> 0 means truncated); None when not a plain WAV or not parseable."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    present = path.stat().st_size - f.tell()
                    return max(0, (size - present) // block_align)
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def load_audio(
    path: str | os.PathLike,
    target_sr: int = 16000,
    max_seconds: float | None = None,
    long_policy: str = "crop",
    silence_threshold: float = 1e-4,
    stats: AudioStats | None = None,
) -> tuple[torch.Tensor, AudioInfo]:
    """Read one audio file as a mono float32 tensor ``[S]`` at ``target_sr`` Hz (see the module docstring).

    ``max_seconds`` (of the output) with ``long_policy`` ``"crop"`` (keep the start) or ``"error"``. Raises
    :class:`AudioError` naming the file for every unusable input."""
    import soundfile as sf

    if long_policy not in LONG_POLICIES:
        raise ValueError(f"long_policy must be one of {LONG_POLICIES}, got {long_policy!r}")
    stats = AUDIO_STATS if stats is None else stats
    p = Path(path)
    if p.is_dir():
        raise AudioError(p, "missing", f"a folder, not an audio file (give its files: {p}/*.wav, {p}/*.flac, ...)")
    if not p.is_file():
        raise AudioError(p, "missing", "no such audio file")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty_file", "the file is empty (0 bytes)")
    try:
        sf.info(str(p))
    except Exception as err:  # libsndfile: format not recognised, header cut...
        raise AudioError(p, "unreadable", f"not a readable audio file: {err}") from None
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as err:  # e.g. "flac decoder lost sync" on a cut FLAC
        raise AudioError(p, "truncated", f"decoding failed after the header ({err})") from None
    missing = _wav_declared_frames(p)
    if missing:
        raise AudioError(p, "truncated", f"the WAV data chunk lacks {missing} of its declared frames")
    frames, channels = data.shape
    if frames == 0:
        raise AudioError(p, "no_samples", "the file holds no audio samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(p, "non_finite", f"{bad} NaN/inf samples")
    out = AudioInfo(str(p), int(sr), int(channels), int(frames), frames / float(sr))
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, S]
    if channels > 1:
        wav = wav.mean(dim=0, keepdim=True)
        out.downmixed = True
        stats.note("downmixed", str(p), f"{channels} channels -> mono (mean)")
    wav = wav[0]
    if sr != target_sr:
        import torchaudio.functional as AF

        wav = AF.resample(wav, int(sr), int(target_sr))
        out.resampled = True
        stats.note("resampled", str(p), f"{sr} Hz -> {target_sr} Hz")
    if max_seconds is not None:
        limit = int(round(max_seconds * target_sr))
        if wav.numel() > limit:
            if long_policy == "error":
                raise AudioError(p, "too_long", f"{wav.numel() / target_sr:.1f} s is longer than {max_seconds} s")
            wav = wav[:limit]
            out.cropped = True
            stats.note("cropped", str(p), f"{out.seconds:.1f} s cropped to {max_seconds} s")
    if float(wav.abs().max()) < silence_threshold:
        out.silent = True
        stats.note("silent", str(p), f"peak below {silence_threshold}")
    return wav.contiguous(), out


@dataclass
class AudioCheck:
    """Result of :func:`check_audio_files`: ``bad`` {path: (reason, message)}, ``notes`` (handled conditions) and
    the number of files checked."""

    n_files: int = 0
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(r for r, _ in self.bad.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_files": self.n_files,
            "bad": {k: list(v) for k, v in sorted(self.bad.items())},
            "reasons": self.reasons(),
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioCheck:
        return cls(int(d["n_files"]), {k: (v[0], v[1]) for k, v in d["bad"].items()}, dict(d["notes"]))


def check_audio_files(
    paths: Iterable[str | os.PathLike],
    target_sr: int = 16000,
    max_seconds: float | None = None,
    long_policy: str = "crop",
    silence_threshold: float = 1e-4,
    stats: AudioStats | None = None,
) -> AudioCheck:
    """Decode every file once with :func:`load_audio`; returns an :class:`AudioCheck` (never raises
    :class:`AudioError`: bad files are collected with their reason). Each file is checked once even if listed
    twice. ``stats``: where notes are counted and logged once per kind (default: a fresh object)."""
    stats = AudioStats() if stats is None else stats
    before = stats.as_dict()
    result = AudioCheck()
    for path in dict.fromkeys(str(p) for p in paths):
        result.n_files += 1
        try:
            load_audio(path, target_sr, max_seconds, long_policy, silence_threshold, stats)
        except AudioError as err:
            result.bad[path] = (err.reason, str(err))
    result.notes = {k: v - before[k] for k, v in stats.as_dict().items()}
    return result


def duration_outliers(
    durations: dict[str, float], factor: float = 4.0, abs_max: float | None = None, top: int = 5
) -> dict[str, Any]:
    """Clips much longer than the rest: duration > ``factor`` x median, or > ``abs_max`` seconds when given.

    ``durations``: {clip id: seconds}; negative values (unknown duration, e.g. -1 from a metadata-only manifest)
    are ignored. Returns ``{"median": m, "threshold": t, "outliers": {id: seconds}}`` with the outliers longest
    first (ties by id) and ``t = min(factor * m, abs_max)``; logs one warning naming how many and the ``top``
    longest. ``median`` is 0.0 and nothing is flagged when no duration is known. NaN/inf raise ``ValueError``
    naming the clip.
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if abs_max is not None and not abs_max > 0:
        raise ValueError(f"abs_max must be > 0, got {abs_max}")
    known: dict[str, float] = {}
    for key, d in durations.items():
        d = float(d)
        if not np.isfinite(d):
            raise ValueError(f"duration of {key!r} is not finite ({d})")
        if d >= 0:
            known[key] = d
    if not known:
        return {"median": 0.0, "threshold": float("inf") if abs_max is None else float(abs_max), "outliers": {}}
    median = float(np.median(np.fromiter(known.values(), dtype=np.float64)))
    threshold = factor * median
    if abs_max is not None:
        threshold = min(threshold, float(abs_max))
    flagged = sorted(((d, k) for k, d in known.items() if d > threshold), key=lambda x: (-x[0], x[1]))
    outliers = {k: d for d, k in flagged}
    if outliers:
        longest = ", ".join(f"{k} ({d:.1f} s)" for d, k in flagged[:top])
        logger.warning(
            "%d of %d clips are longer than %.1f s (%s x median %.2f s%s); longest: %s",
            len(outliers),
            len(known),
            threshold,
            factor,
            median,
            "" if abs_max is None else f", or > {abs_max} s",
            longest,
        )
    return {"median": median, "threshold": threshold, "outliers": outliers}


# ---------------------------------------------------------------------------------------------------- memory cache
class AudioCache:
    """Decoded waveforms kept in memory (per process), so an epoch after the first decodes no file again: the same
    tensors :func:`load_audio` returns, up to ``max_mb`` MiB (then files are decoded as usual). ``max_mb`` 0: off."""

    def __init__(self, max_mb: float = 0.0) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.used = 0
        self.store: dict[tuple, tuple[tuple, torch.Tensor]] = {}

    def load(self, path: str | os.PathLike, target_sr: int = 16000, max_seconds: float | None = None) -> torch.Tensor:
        """``load_audio(path, target_sr, max_seconds, "crop")[0]``, from memory when seen before and the file is
        unchanged (same size, modification time and inode: a file replaced in place is decoded again)."""
        key = (str(path), int(target_sr), max_seconds)
        try:
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        hit = self.store.get(key)
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1]
        wav = load_audio(path, target_sr=target_sr, max_seconds=max_seconds, long_policy="crop")[0]
        if hit is not None:  # the file changed: forget the old waveform
            self.used -= hit[1].numel() * hit[1].element_size()
            del self.store[key]
        size = wav.numel() * wav.element_size()
        if stamp is not None and self.used + size <= self.max_bytes:
            self.store[key] = (stamp, wav)
            self.used += size
        return wav


AUDIO_CACHE = AudioCache()


def set_audio_cache(max_mb: float) -> AudioCache:
    """Set the process-wide cache size (MiB); the recipes call it with ``audio_cache_mb``."""
    AUDIO_CACHE.max_bytes = int(max(0.0, float(max_mb)) * 2**20)
    return AUDIO_CACHE


# ---------------------------------------------------------------------------------------------------- start-up check
AUDIO_CHECK_NAME = "audio_check.json"


class BadAudioError(ValueError):
    """Unusable recordings found by the audio check while bad input is not to be skipped."""


def _row_path(row: dict, data_root: str | os.PathLike | None) -> str:
    """The audio file of a manifest row (``$data_root`` replaced by the corpus folder)."""
    return str(row["wav"]).replace("$data_root", str(data_root)) if data_root else str(row["wav"])


def _files_key(paths: list[str], options: dict[str, Any]) -> str:
    """A hash of the file list with sizes and modification times, and the check options."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:20]


def check_split_audio(
    rows: dict[str, list[dict]],
    data_root: str | os.PathLike,
    cache_path: str | os.PathLike,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
) -> AudioCheck:
    """Decode every recording of ``rows`` ({split: manifest rows}) once; the result is cached in ``cache_path``
    (JSON, reused while the files, their sizes and modification times and the options are unchanged)."""
    paths = sorted({_row_path(r, data_root) for split_rows in rows.values() for r in split_rows})
    options = {"sample_rate": sample_rate, "max_seconds": max_seconds, "version": 1}
    key = _files_key(paths, options)
    cache_path = Path(cache_path)
    if cache_path.is_file():
        try:
            old = json.loads(cache_path.read_text(encoding="utf-8"))
            if old.get("key") == key:
                logger.info("audio check of %d files reused from %s", len(paths), cache_path)
                return AudioCheck.from_dict(old["check"])
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: unreadable audio-check cache, checking again", cache_path)
    logger.info("checking %d audio files (decoding each once)", len(paths))
    check = check_audio_files(paths, target_sr=sample_rate, max_seconds=max_seconds, long_policy="crop")
    atomic_write_json(cache_path, {"key": key, "check": check.to_dict()})
    return check


def drop_bad_audio(
    rows: dict[str, list[dict]], data_root: str | os.PathLike, check: AudioCheck, skip_bad: bool, where: str = ""
) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """Remove the rows whose recording the check found unusable. Returns (rows, {split: {reason: count}}).
    With ``skip_bad=False`` any bad recording raises :class:`BadAudioError` listing the first few."""
    if check.bad and not skip_bad:
        msgs = [m for _, m in list(check.bad.values())[:5]]
        more = f" and {len(check.bad) - 5} more" if len(check.bad) > 5 else ""
        raise BadAudioError(
            f"{len(check.bad)} unusable audio files{' (' + where + ')' if where else ''}: "
            + "; ".join(msgs)
            + more
            + ". Fix or remove them, or set skip_bad: true to skip and count them."
        )
    kept: dict[str, list[dict]] = {}
    skipped: dict[str, dict[str, int]] = {}
    for split, split_rows in rows.items():
        reasons: Counter = Counter()
        keep = []
        for r in split_rows:
            bad = check.bad.get(_row_path(r, data_root))
            if bad is None:
                keep.append(r)
            else:
                reasons[bad[0]] += 1
        kept[split] = keep
        skipped[split] = dict(reasons)
        if reasons:
            logger.warning(
                "%s: skipped %d recordings with unusable audio %s (listed in %s)",
                split,
                sum(reasons.values()),
                dict(reasons),
                where or AUDIO_CHECK_NAME,
            )
    return kept, skipped


def check_and_drop_audio(
    rows: dict[str, list[dict]],
    data_root: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    sample_rate: int,
    max_seconds: float | None,
    skip_bad: bool,
    required: Iterable[str],
    what: str = "recording",
) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]], AudioCheck]:
    """The start-up audio check of a recipe: decode every file once on the main process (cached in
    ``out_dir/audio_check.json``, see :func:`check_split_audio`), then drop the unusable rows on every process
    (:func:`drop_bad_audio`). Returns (rows, {split: {reason: count}}, check); a ``required`` split left empty is an
    error naming the cache file."""
    from speechbrain.utils.distributed import run_on_main

    path = Path(out_dir) / AUDIO_CHECK_NAME
    run_on_main(
        check_split_audio,
        args=[rows, data_root, path],
        kwargs={"sample_rate": sample_rate, "max_seconds": max_seconds},
    )
    check = AudioCheck.from_dict(json.loads(path.read_text(encoding="utf-8"))["check"])
    rows, skipped = drop_bad_audio(rows, data_root, check, skip_bad, where=str(path))
    for split in required:
        if not rows[split]:
            raise ValueError(f"{path}: no usable {split} {what} is left after the audio check")
    return rows, skipped, check


def dropped_items(report: dict, split: str = "test") -> dict:
    """What a run's data ``report`` left out of one split: ``{"prepare_skipped": {reason: n}, "audio_skipped":
    {reason: n}, "n_dropped": total}`` (the record ``--test_only`` results carry)."""
    prep = dict((report.get("prepare_skipped") or {}).get(split) or {})
    audio = dict((report.get("audio_skipped") or {}).get(split) or {})
    return {"prepare_skipped": prep, "audio_skipped": audio,
            "n_dropped": sum(int(n) for n in prep.values()) + sum(int(n) for n in audio.values())}  # fmt: skip
