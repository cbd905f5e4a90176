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

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch

from slukd.data.audio import AudioCheck, check_audio_files, load_audio
from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

AUDIO_CHECK_NAME = "audio_check.json"


class BadAudioError(ValueError):
    """Unusable recordings found by the audio check while bad input is not to be skipped."""


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
        return load_audio(wav, target_sr=sample_rate, max_seconds=max_seconds, long_policy="crop")[0]

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
    paths = sorted({audio_path(r, data_root) for split_rows in rows.values() for r in split_rows})
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
            bad = check.bad.get(audio_path(r, data_root))
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


class ManifestError(ValueError):
    """A malformed manifest row; the message names the file and line."""


MANIFEST_COLUMNS = ("ID", "wav", "duration", "scenario", "action", "intent", "transcript", "entities", "target")


def read_manifest_checked(path: str | os.PathLike) -> list[dict]:
    """Rows of a SLURP manifest (:func:`slukd.data.slurp.prepare_slurp`) as dicts, ``entities`` decoded from JSON
    and ``duration`` as float; a missing column, short row, bad number or bad JSON raises :class:`ManifestError`
    naming ``file:line`` (delete the run's ``manifests/`` folder to have it rebuilt)."""
    import csv

    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{path}:1: not an SLU manifest (missing columns {missing})")
            rows = []
            for r in reader:
                where = f"{path}:{reader.line_num}"
                if None in r or any(r[c] is None for c in MANIFEST_COLUMNS):
                    raise ManifestError(f"{where}: the row has {len(r) - (None in r)} fields, the header more or fewer")
                try:
                    r["entities"] = json.loads(r["entities"])
                    r["duration"] = float(r["duration"])
                except ValueError as err:
                    raise ManifestError(f"{where}: bad field 'entities' or 'duration' ({err})") from None
                if not isinstance(r["entities"], list):
                    raise ManifestError(f"{where}: field 'entities' is not a JSON list")
                rows.append(r)
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 ({err})") from None
    return rows
