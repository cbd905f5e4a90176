"""Audio-captioning corpora -> manifests, and the word-level caption vocabulary.

Prepare functions read a user's ``--data_folder`` and write SpeechBrain-style CSV manifests into ``save_folder``:

    ID, wav, duration, captions        (``captions`` is a JSON list of the reference captions; [] in audio_only.csv)

- :func:`prepare_clotho`: Clotho v2 layout, ``clotho_captions_{development,validation,evaluation}.csv`` (columns
  ``file_name, caption_1..caption_5``) with audio in ``development/``, ``validation/``, ``evaluation/`` (or the
  ``clotho_audio_<split>/`` folder names). The built-in scenes corpus (``slukd synth scenes``) is written in this
  layout, plus ``audio_only.csv`` for its caption-free pool.
- :func:`prepare_audiocaps`: AudioCaps ``{train,val,test}.csv`` (``audiocap_id, youtube_id, start_time, caption``,
  one row per caption) with audio found under ``<split>/`` or ``audio/<split>/`` as ``<youtube_id>_<start_time>``,
  ``Y<youtube_id>``, ``<youtube_id>`` or ``<audiocap_id>`` (``.wav``/``.flac``).

Bad rows are skipped, counted by split and reason and logged with file and line; a file without the expected
columns raises ``ValueError`` naming the file. Reasons (:data:`SKIP_REASONS`): ``empty_file_name``, ``no_caption``,
``missing_field``, ``wrong_caption_count`` (Clotho: not ``n_captions`` = 5 non-empty captions; AudioCaps: only with
``captions_per_clip``), ``missing_audio``, ``unreadable_audio``, ``duplicate_clip`` / ``conflicting_clip`` (a clip
ID seen before in the split with the same / other audio file or captions; the first is kept), and for AudioCaps
``duplicate_caption`` / ``conflicting_caption`` (an ``audiocap_id`` seen before with the same / another clip or
caption). The counts go to ``save_folder/prepare_report.json`` (:func:`read_prepare_report`), shaped like the SLURP
one: ``report.skipped`` is {split: {reason: count}}.

Text: :func:`normalize_caption` lowercases, keeps letters, digits and in-word apostrophes, collapses spaces.
:class:`WordVocab` maps normalised words to ids (pad 0, bos 1, eos 2, unk 3), captions capped at ``max_words``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from slukd.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST_FIELDS = ["ID", "wav", "duration", "captions"]
CLOTHO_SPLITS = {"train": "development", "valid": "validation", "test": "evaluation"}
AUDIOCAPS_SPLITS = {"train": "train", "valid": "val", "test": "test"}
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
CLOTHO_CAPTIONS = 5
#: AudioCaps (v1) captions per clip: pass as ``captions_per_clip`` to :func:`prepare_audiocaps` to enforce them
AUDIOCAPS_CAPTIONS_PER_CLIP = {"train": 1, "valid": 5, "test": 5}
REPORT_NAME = "prepare_report.json"
SKIP_REASONS = (
    "empty_file_name",
    "no_caption",
    "missing_field",
    "wrong_caption_count",
    "missing_audio",
    "unreadable_audio",
    "duplicate_clip",
    "conflicting_clip",
    "duplicate_caption",
    "conflicting_caption",
)


def normalize_caption(text: str) -> str:
    """Lowercase; every character other than a-z, 0-9 and in-word apostrophes becomes a space; spaces collapsed."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9']+", " ", text)
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)
    return " ".join(text.split())


class CaptionFormatError(ValueError):
    """Bad caption-corpus input (a row, a file, an empty split); the message names the file (and line)."""


#: skip reasons that are not errors even with ``skip_bad: false`` (an exact repeat is kept once, as for SLURP)
HARMLESS_SKIPS = ("duplicate_clip", "duplicate_caption")


@dataclass
class SkipStats:
    """Skipped rows by split and reason, with the first few locations (``file:line: detail (reason)``). With
    ``strict`` (``skip_bad: false``) a bad row raises :class:`CaptionFormatError` instead (exact repeats excepted)."""

    counts: dict[str, Counter] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    strict: bool = False

    def skip(self, split: str, reason: str, where: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        if self.strict and reason not in HARMLESS_SKIPS:
            shown = f"{where}: {detail} ({reason})" if detail else f"{where}: ({reason})"
            raise CaptionFormatError(f"{shown}; fix it, or set skip_bad: true to skip and count such rows")
        self.counts.setdefault(split, Counter())[reason] += 1
        msg = f"{where}: {detail} ({reason})" if detail else f"{where}: ({reason})"
        if len(self.examples) < 20:
            self.examples.append(msg)
        logger.warning("skipped %s", msg)

    def by_split(self, splits: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """{split: {reason: count}}; every split of ``splits`` is present (empty when nothing was skipped)."""
        out = {s: {} for s in splits}
        out.update({s: dict(c) for s, c in self.counts.items()})
        return out

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


class _FirstSeen:
    """Remembers the first occurrence of each key (its ``file:line`` and value) to tell exact repeats from
    conflicting ones."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, Any]] = {}

    def check(self, key: str, value: Any, where: str) -> tuple[str, str] | None:
        """None for a new key (remembered); else ("same" | "other", file:line of the first occurrence)."""
        if key not in self.first:
            self.first[key] = (where, value)
            return None
        where0, value0 = self.first[key]
        return ("same" if value0 == value else "other"), where0

    def repeated(self, key: str, value: Any, where: str, stats: SkipStats, split: str, what: str, label: str,
                 same_label: str | None = None) -> bool:  # fmt: skip
        """True when ``key`` was read before, counted as ``duplicate_<what>`` (same value: kept once) or
        ``conflicting_<what>`` (another value: the first is kept), named by ``label`` (``same_label`` for an exact
        repeat, when given) in the log."""
        dup = self.check(key, value, where)
        if dup is None:
            return False
        kind, where0 = dup
        if kind == "same":
            stats.skip(split, f"duplicate_{what}", where, f"{same_label or label} repeats {where0} exactly; kept once")
        else:
            stats.skip(split, f"conflicting_{what}", where, f"{label} was read at {where0} with other content; the "
                       "first is kept")  # fmt: skip
        return True


def _duration(path: Path) -> float:
    info = sf.info(str(path))
    return float(info.frames) / float(info.samplerate)


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(r[k]) if k == "captions" else r[k]) for k in MANIFEST_FIELDS})
    return atomic_write_text(path, buf.getvalue())


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a manifest written here, with ``duration`` as float and ``captions`` as a list of strings."""
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(MANIFEST_FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a caption manifest (missing columns {sorted(missing)})")
        for line, r in enumerate(reader, start=2):
            try:
                rows.append(
                    {
                        "ID": r["ID"],
                        "wav": r["wav"],
                        "duration": float(r["duration"]),
                        "captions": json.loads(r["captions"]),
                    }
                )
            except (ValueError, TypeError) as err:
                raise ValueError(f"{path}:{line}: bad manifest row ({err})") from err
    return rows


def _split_captioned(
    rows: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped): a seeded random ``fraction`` of the clips keeps its captions (the data-scarce option)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"captioned_fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return rows, []
    n_keep = max(1, int(round(fraction * len(rows))))
    perm = np.random.default_rng([seed, 7]).permutation(len(rows))
    keep = set(perm[:n_keep].tolist())
    kept = [r for i, r in enumerate(rows) if i in keep]
    dropped = [dict(r, captions=[]) for i, r in enumerate(rows) if i not in keep]
    return kept, dropped


def _find_dir(base: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        if (base / n).is_dir():
            return base / n
    return None


def read_clotho_csv(
    csv_path: Path, audio_dir: Path, split: str, stats: SkipStats, n_captions: int | None = CLOTHO_CAPTIONS
) -> list[dict[str, Any]]:
    """Rows of one Clotho caption CSV (``file_name, caption_1..caption_N``) whose audio exists and reads.

    ``n_captions``: the number of non-empty captions a row must have (None: at least one)."""
    rows = []
    seen = _FirstSeen()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cap_cols = sorted((c for c in header if re.fullmatch(r"caption_\d+", c or "")), key=lambda c: int(c[8:]))
        if "file_name" not in header or not cap_cols or len(cap_cols) < (n_captions or 1):
            raise CaptionFormatError(
                f"{csv_path}: expected columns file_name, caption_1..caption_{n_captions or 'N'}; got {header}"
            )
        for r in reader:
            where = f"{csv_path}:{reader.line_num}"
            name = (r.get("file_name") or "").strip()
            if not name:
                stats.skip(split, "empty_file_name", where)
                continue
            caps = [(r.get(c) or "").strip() for c in cap_cols]
            caps = [c for c in caps if c]
            if not caps:
                stats.skip(split, "no_caption", where, name)
                continue
            if n_captions is not None and len(caps) != n_captions:
                stats.skip(split, "wrong_caption_count", where, f"{name} has {len(caps)} captions, not {n_captions}")
                continue
            clip_id = f"{split}_{Path(name).stem}"
            label = f"clip {clip_id} ({name})"
            if seen.repeated(clip_id, (name, caps), where, stats, split, "clip", label, same_label=name):
                continue
            wav = (audio_dir / name).resolve()
            if not wav.is_file():
                stats.skip(split, "missing_audio", where, str(wav))
                continue
            try:
                dur = _duration(wav)
            except Exception as err:  # unreadable audio
                stats.skip(split, "unreadable_audio", where, f"{wav}: {err}")
                continue
            rows.append({"ID": clip_id, "wav": str(wav), "duration": round(dur, 3), "captions": caps})
    return rows


def _audio_only_rows(
    folder: Path, stats: SkipStats, seen: _FirstSeen, csv_name: str | None = None
) -> list[dict[str, Any]]:
    """An audio-only pool: the files named in ``folder/../<csv_name>`` (column file_name), or every audio file.
    ``seen`` is shared by the pool's sources (a clip ID names one file)."""
    rows = []
    if csv_name is not None:
        csv_path = folder.parent / csv_name
        items = []
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "file_name" not in (reader.fieldnames or []):
                raise ValueError(f"{csv_path}: expected a file_name column; got {reader.fieldnames}")
            for r in reader:
                where = f"{csv_path}:{reader.line_num}"
                name = (r.get("file_name") or "").strip()
                if not name:
                    stats.skip("audio_only", "empty_file_name", where)
                    continue
                items.append(((folder / name).resolve(), where))
    else:
        items = [(p.resolve(), str(p)) for p in sorted(folder.rglob("*")) if p.suffix.lower() in AUDIO_EXTS]
    for path, where in items:
        clip_id = f"audio_only_{path.stem}"
        if seen.repeated(clip_id, str(path), where, stats, "audio_only", "clip", f"clip {clip_id}"):
            continue
        if not path.is_file():
            stats.skip("audio_only", "missing_audio", where, str(path))
            continue
        try:
            dur = _duration(path)
        except Exception as err:  # unreadable audio
            stats.skip("audio_only", "unreadable_audio", where, f"{path}: {err}")
            continue
        rows.append({"ID": clip_id, "wav": str(path), "duration": round(dur, 3), "captions": []})
    return rows


def prepare_clotho(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    audio_only_folder: str | os.PathLike | None = None,
    captioned_fraction: float = 1.0,
    seed: int = 0,
    n_captions: int | None = CLOTHO_CAPTIONS,
    skip_bad: bool = True,
) -> dict[str, Path]:
    """Clotho v2 layout -> ``save_folder/{train,valid,test,audio_only}.csv``. Returns the manifest paths.

    ``audio_only_folder``: extra caption-free clips (every audio file below it). The built-in corpus's
    ``audio_only.csv`` is used automatically when present. ``captioned_fraction`` < 1 keeps captions for a seeded
    fraction of the training clips and moves the others to the audio-only manifest. ``n_captions``: captions a row
    must have (Clotho: 5; None accepts any number >= 1). Skips by split and reason go to
    ``save_folder/prepare_report.json`` (:func:`read_prepare_report`); with ``skip_bad=False`` the first bad row
    (missing, empty or non-audio file, wrong caption count, ...) raises :class:`CaptionFormatError` naming it.
    """
    data, save = Path(data_folder), Path(save_folder)
    if not data.is_dir():
        raise FileNotFoundError(f"Clotho data folder not found: {data}")
    stats = SkipStats(strict=not skip_bad)
    out: dict[str, list[dict[str, Any]]] = {}
    for split, cname in CLOTHO_SPLITS.items():
        csv_path = data / f"clotho_captions_{cname}.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{csv_path} not found (Clotho v2 layout expected in {data})")
        audio_dir = _find_dir(data, (cname, f"clotho_audio_{cname}", f"audio/{cname}"))
        if audio_dir is None:
            raise FileNotFoundError(f"no audio folder for {cname} in {data} (tried {cname}/, clotho_audio_{cname}/)")
        out[split] = read_clotho_csv(csv_path, audio_dir, split, stats, n_captions)
    pool: list[dict[str, Any]] = []
    seen = _FirstSeen()
    if (data / "audio_only.csv").is_file() and (data / "audio_only").is_dir():
        pool += _audio_only_rows(data / "audio_only", stats, seen, csv_name="audio_only.csv")
    if audio_only_folder is not None:
        pool += _audio_only_rows(Path(audio_only_folder), stats, seen)
    out["train"], dropped = _split_captioned(out["train"], captioned_fraction, seed)
    out["audio_only"] = pool + dropped
    meta = {
        "corpus": "clotho",
        "data_folder": str(data),
        "captioned_fraction": captioned_fraction,
        "seed": seed,
        "n_captions": n_captions,
    }
    return _finish(save, out, stats, meta)


def _audiocaps_candidates(yid: str, start: str, cap_id: str) -> list[str]:
    """Audio file stems tried for a clip, in order: ``<yid>_<start>``, ``<yid>_<int(start)>``, ``<yid>_<start>.000``,
    ``Y<yid>``, ``<yid>``, ``<audiocap_id>``."""
    cand = [f"{yid}_{start}", f"{yid}_{start}.000", f"Y{yid}", yid, cap_id]
    try:
        cand.insert(1, f"{yid}_{int(float(start))}")
    except ValueError:
        pass
    return cand


def _read_audiocaps_csv(
    csv_path: Path, audio_dir: Path, split: str, stats: SkipStats
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One AudioCaps CSV (a row per caption) -> ({clip key: row with its captions, duration 0}, {clip key: file:line
    of its first row}). Clips are keyed ``<youtube_id>_<start_time>``; a clip without audio is counted once."""
    index = {p.stem: p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTS}
    clips: dict[str, dict[str, Any]] = {}
    where_of: dict[str, str] = {}  # clip key -> file:line of its first row
    no_audio: set[str] = set()
    seen = _FirstSeen()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        need = {"audiocap_id", "youtube_id", "start_time", "caption"}
        if not need <= set(reader.fieldnames or []):
            raise ValueError(f"{csv_path}: expected columns {sorted(need)}; got {reader.fieldnames}")
        for r in reader:
            where = f"{csv_path}:{reader.line_num}"
            yid, start = (r["youtube_id"] or "").strip(), (r["start_time"] or "").strip()
            cap, cap_id = (r["caption"] or "").strip(), (r["audiocap_id"] or "").strip()
            if not yid:
                stats.skip(split, "missing_field", where, "no youtube_id")
                continue
            if not cap:
                stats.skip(split, "no_caption", where, f"youtube_id {yid}")
                continue
            key = f"{yid}_{start}"
            if cap_id and seen.repeated(cap_id, (key, cap), where, stats, split, "caption", f"audiocap_id {cap_id}"):
                continue
            if key in no_audio:
                continue  # the clip was counted once as missing_audio
            if key in clips:
                clips[key]["captions"].append(cap)
                continue
            wav = next((index[c] for c in _audiocaps_candidates(yid, start, cap_id) if c in index), None)
            if wav is None:
                no_audio.add(key)
                stats.skip(split, "missing_audio", where, f"no audio for youtube_id {yid} start {start} in {audio_dir}")
                continue
            clips[key] = {"ID": f"{split}_{key}", "wav": str(wav.resolve()), "duration": 0.0, "captions": [cap]}
            where_of[key] = where
    return clips, where_of


def _audiocaps_rows(
    clips: dict[str, dict[str, Any]], where_of: dict[str, str], split: str, want: int | None, stats: SkipStats
) -> list[dict[str, Any]]:
    """The clips with ``want`` captions (None: any) whose audio reads, with their durations filled in."""
    rows = []
    for key, c in clips.items():
        if want is not None and len(c["captions"]) != want:
            stats.skip(
                split,
                "wrong_caption_count",
                where_of[key],
                f"clip {key} has {len(c['captions'])} captions, not {want}",
            )
            continue
        try:
            c["duration"] = round(_duration(Path(c["wav"])), 3)
        except Exception as err:  # unreadable audio
            stats.skip(split, "unreadable_audio", where_of[key], f"{c['wav']}: {err}")
            continue
        rows.append(c)
    return rows


def prepare_audiocaps(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    audio_only_folder: str | os.PathLike | None = None,
    captioned_fraction: float = 1.0,
    seed: int = 0,
    captions_per_clip: dict[str, int] | None = None,
    skip_bad: bool = True,
) -> dict[str, Path]:
    """AudioCaps CSVs (one row per caption) -> manifests grouped per clip. Returns the manifest paths.

    ``captions_per_clip``: {split: count} a clip must have (e.g. :data:`AUDIOCAPS_CAPTIONS_PER_CLIP`); None checks
    nothing. Clip-level skips (``missing_audio``, ``unreadable_audio``, ``wrong_caption_count``) count clips, the
    others caption rows. Skips by split and reason go to ``save_folder/prepare_report.json``; with
    ``skip_bad=False`` the first bad row raises :class:`CaptionFormatError` naming it.
    """
    data, save = Path(data_folder), Path(save_folder)
    if not data.is_dir():
        raise FileNotFoundError(f"AudioCaps data folder not found: {data}")
    for k in captions_per_clip or {}:
        if k not in AUDIOCAPS_SPLITS:
            raise ValueError(f"captions_per_clip: unknown split {k!r}; use {sorted(AUDIOCAPS_SPLITS)}")
    stats = SkipStats(strict=not skip_bad)
    out: dict[str, list[dict[str, Any]]] = {}
    for split, aname in AUDIOCAPS_SPLITS.items():
        csv_path = data / f"{aname}.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{csv_path} not found (AudioCaps CSVs expected in {data})")
        audio_dir = _find_dir(data, (aname, f"audio/{aname}", split, f"audio/{split}")) or data
        clips, where_of = _read_audiocaps_csv(csv_path, audio_dir, split, stats)
        out[split] = _audiocaps_rows(clips, where_of, split, (captions_per_clip or {}).get(split), stats)
    out["train"], dropped = _split_captioned(out["train"], captioned_fraction, seed)
    pool = _audio_only_rows(Path(audio_only_folder), stats, _FirstSeen()) if audio_only_folder is not None else []
    out["audio_only"] = pool + dropped
    meta = {
        "corpus": "audiocaps",
        "data_folder": str(data),
        "captioned_fraction": captioned_fraction,
        "seed": seed,
        "captions_per_clip": captions_per_clip,
    }
    return _finish(save, out, stats, meta)


def _finish(
    save: Path, out: dict[str, list[dict[str, Any]]], stats: SkipStats, meta: dict[str, Any]
) -> dict[str, Path]:
    save.mkdir(parents=True, exist_ok=True)
    paths = {split: _write_manifest(save / f"{split}.csv", rows) for split, rows in out.items()}
    report = {
        "rows": {s: len(r) for s, r in out.items()},
        "skipped": stats.by_split(out),
        "examples": stats.examples,
    }
    atomic_write_json(
        save / REPORT_NAME, {"options": meta, "csv": {s: str(p) for s, p in paths.items()}, "report": report}
    )
    if stats.total:
        logger.warning("prepare skipped %d rows: %s (see %s)", stats.total, report["skipped"], save / REPORT_NAME)
    logger.info("caption manifests in %s: %s", save, report["rows"])
    return paths


def read_prepare_report(save_folder: str | os.PathLike) -> dict[str, Any]:
    """The report the last :func:`prepare_clotho` / :func:`prepare_audiocaps` wrote into ``save_folder``:
    ``{"rows": {split: n}, "skipped": {split: {reason: count}}, "examples": ["file:line: detail (reason)", ...]}``."""
    path = Path(save_folder) / REPORT_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))["report"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a caption prepare report ({err})") from err


class WordVocab:
    """Word-level caption vocabulary: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then words by frequency."""

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: list[str], max_words: int = 20):
        self.itos = list(self.SPECIALS) + [w for w in words if w not in self.SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_words = max_words

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_words: int = 20) -> WordVocab:
        """Words of the normalised captions seen at least ``min_count`` times, most frequent first (ties: a-z)."""
        counts = Counter(w for c in captions for w in normalize_caption(c).split())
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words, max_words=max_words)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str, add_eos: bool = True) -> list[int]:
        """Normalised words -> ids, capped at ``max_words`` words, then ``<eos>`` (no ``<bos>``)."""
        ids = [self.stoi.get(w, self.unk_id) for w in normalize_caption(caption).split()[: self.max_words]]
        return ids + [self.eos_id] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text: stops at the first ``<eos>``, drops ``<pad>``/``<bos>``; unknown ids become ``<unk>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else "<unk>")
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, {"itos": self.itos, "max_words": self.max_words})

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordVocab:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
            itos, max_words = obj["itos"], int(obj["max_words"])
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a word vocabulary file ({err})") from err
        if tuple(itos[:4]) != cls.SPECIALS:
            raise ValueError(f"{path}: vocabulary must start with {cls.SPECIALS}")
        return cls(itos[4:], max_words=max_words)
