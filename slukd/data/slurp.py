"""SLURP (or any corpus in SLURP's layout) -> SpeechBrain CSV manifests, one row per recording.

Layout read (SLURP's own; the built-in corpus uses the same)::

    DATA/dataset/slurp/{train,train_synthetic,devel,test}.jsonl     (or DATA/{split}.jsonl)
    DATA/slurp_real/*.flac, DATA/slurp_synth/*.flac                 (or DATA/audio/slurp_real, ...)

Manifest columns: ID, wav (``$data_root/slurp_real/<file>``), duration (seconds from the FLAC header; -1 when
audio is not checked), slurp_id, scenario, action, intent (= scenario_action, never the raw ``intent`` field),
transcript (lowercased, whitespace-normalised ``sentence``), entities (JSON list of {"type","filler"} in span order,
filler = lowercased span tokens joined by single spaces), target (:func:`slukd.data.target.serialise`).

Manifests go to ``out_dir`` (never into the data folder), with ``prepare_report.json`` (rows per split, skips by
split and reason). Bad input raises :class:`SlurpFormatError` naming file and line, or with ``skip_bad=True`` is
skipped, logged and counted. Repeated slurp_ids / recordings within a split: exact repeats are kept once and counted
(``duplicate_slurp_id``, ``duplicate_recording``); repeats with other labels (scenario, action, sentence or
entities) are errors naming both lines, or with ``skip_bad`` the first is kept and the later one is counted
(``conflicting_slurp_id``, ``conflicting_recording``).

:class:`SlurpFormatError` is the one error class for SLURP-format input in :mod:`slukd.data` (the SLU corpus
synthesiser reads SLURP jsonl through :func:`load_line` too) and in :mod:`slukd.metrics.slurp_scorer` (gold and
prediction files, which imports it from here; :mod:`slukd.data` never imports :mod:`slukd.metrics`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from slukd.data.target import SLURP_ENTITY_TYPES, SLURP_SCENARIO_ACTIONS, normalise_text, serialise
from slukd.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

SPLITS = ("train", "train_synthetic", "devel", "test")
COLUMNS = ["ID", "wav", "duration", "slurp_id", "scenario", "action", "intent", "transcript", "entities", "target"]
REPORT_NAME = "prepare_report.json"
_ENTITY_SET = frozenset(SLURP_ENTITY_TYPES)


class SlurpFormatError(ValueError):
    """Bad SLURP input; the message names the file and line."""


@dataclass
class PrepareReport:
    """What :func:`prepare_slurp` did: rows written per split and skips by reason.

    ``skipped`` is {split: {reason: count}}; it counts sentences (jsonl lines) for sentence-level reasons
    (``malformed_json``, ``non_utf8``, ``span_out_of_range``, ``unknown_scenario``, ``dollar_sign``, ``bad_action``,
    ``bad_field``, ``duplicate_slurp_id``, ``conflicting_slurp_id``) and recordings for the others
    (``not_headset``, ``duplicate_recording``, ``conflicting_recording``, ``missing_audio``, ``unreadable_audio``,
    ``too_long``). A ``duplicate_slurp_id`` line's recordings not seen before are still kept.
    """

    rows: dict[str, int] = field(default_factory=dict)
    sentences: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    missing_splits: list[str] = field(default_factory=list)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    audio_check: bool = True

    def total_skipped(self) -> int:
        return sum(sum(v.values()) for v in self.skipped.values())


def find_jsonl(data_folder: Path, split: str) -> Path | None:
    """``DATA/dataset/slurp/<split>.jsonl`` or ``DATA/<split>.jsonl`` (first that exists)."""
    for cand in (data_folder / "dataset" / "slurp" / f"{split}.jsonl", data_folder / f"{split}.jsonl"):
        if cand.is_file():
            return cand
    return None


def audio_subdir(data_folder: Path, split: str) -> str:
    """Folder (relative to ``data_folder``) of a split's audio: ``slurp_synth`` for train_synthetic, else
    ``slurp_real``; ``audio/<name>`` when that is where it exists."""
    name = "slurp_synth" if split == "train_synthetic" else "slurp_real"
    if not (data_folder / name).is_dir() and (data_folder / "audio" / name).is_dir():
        return f"audio/{name}"
    return name


def _entities_of(d: dict, where: str) -> list[dict]:
    tokens = d["tokens"]
    if not isinstance(tokens, list):
        raise SlurpFormatError(f"{where}: 'tokens' is not a list")
    surfaces = []
    for k, t in enumerate(tokens):
        if not isinstance(t, dict) or not isinstance(t.get("surface"), str):
            raise SlurpFormatError(f"{where}: token {k} has no string 'surface'")
        surfaces.append(t["surface"])
    ents = []
    raw = d.get("entities", []) or []
    if not isinstance(raw, list):
        raise SlurpFormatError(f"{where}: 'entities' is not a list")
    for k, e in enumerate(raw):
        if not isinstance(e, dict) or "span" not in e or "type" not in e:
            raise SlurpFormatError(f"{where}: entity {k} lacks 'span' or 'type'")
        span = e["span"]
        if not isinstance(span, list) or not span or not all(isinstance(i, int) for i in span):
            raise SlurpFormatError(f"{where}: entity {k} ({e.get('type')}): span must be a non-empty list of ints")
        bad = [i for i in span if i < 0 or i >= len(surfaces)]
        if bad:
            raise SlurpFormatError(
                f"{where}: entity {k} ({e['type']}): span {span} outside the {len(surfaces)} tokens (span_out_of_range)"
            )
        filler = " ".join(surfaces[i].lower() for i in span)
        ents.append((min(span), k, {"type": str(e["type"]), "filler": normalise_text(filler)}))
    ents.sort(key=lambda x: (x[0], x[1]))
    return [x[2] for x in ents]


def _reason_of(err: SlurpFormatError) -> str:
    msg = str(err)
    for key in ("malformed_json", "non_utf8", "span_out_of_range", "unknown_scenario", "dollar_sign", "bad_action"):
        if key in msg:
            return key
    return "bad_field"


def parse_sentence(line: str, where: str) -> dict:
    """One jsonl line -> {slurp_id, scenario, action, intent, transcript, entities, target, recordings}.

    Raises :class:`SlurpFormatError` (message starts with ``where`` = ``file:line``)."""
    return parse_record(_load_json(line, where), where)


def load_line(raw: bytes | str, where: str, require_recordings: bool = True) -> tuple[dict, dict]:
    """One jsonl line (bytes are decoded as UTF-8) -> (the record as read, :func:`parse_record` of it).

    Raises :class:`SlurpFormatError` naming ``where`` (``non_utf8``, ``malformed_json`` or a field error).
    ``require_recordings=False``: a record without ``recordings`` is read as having none (sentences to synthesise)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SlurpFormatError(f"{where}: not UTF-8 (non_utf8): byte {err.start}") from None
    d = _load_json(raw, where)
    return d, parse_record(d if require_recordings else dict(d, recordings=[]), where)


def _load_json(line: str, where: str) -> dict:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as err:
        raise SlurpFormatError(f"{where}: malformed JSON (malformed_json): {err.msg} at column {err.colno}") from None
    if not isinstance(d, dict):
        raise SlurpFormatError(f"{where}: malformed JSON (malformed_json): not an object")
    return d


def parse_record(d: dict, where: str) -> dict:
    """A SLURP record (decoded jsonl object) -> the fields of :func:`parse_sentence`; raises
    :class:`SlurpFormatError` naming ``where`` and the field."""
    for key in ("slurp_id", "sentence", "scenario", "action", "tokens", "recordings"):
        if key not in d:
            raise SlurpFormatError(f"{where}: missing field {key!r}")
    scenario, action = d["scenario"], d["action"]
    if scenario not in SLURP_SCENARIO_ACTIONS:
        raise SlurpFormatError(f"{where}: unknown scenario {scenario!r} (unknown_scenario)")
    if not isinstance(action, str) or not action or len(action.split()) != 1:
        raise SlurpFormatError(f"{where}: action must be one word: {action!r} (bad_action)")
    if not isinstance(d["sentence"], str):
        raise SlurpFormatError(f"{where}: field 'sentence' is not a string")
    entities = _entities_of(d, where)
    transcript = normalise_text(d["sentence"].lower())
    if "$" in transcript or any("$" in e["filler"] for e in entities):
        # SpeechBrain's CSV reader substitutes $variables in every field
        raise SlurpFormatError(f"{where}: '$' in the sentence cannot go into a SpeechBrain manifest (dollar_sign)")
    if not isinstance(d["recordings"], list):
        raise SlurpFormatError(f"{where}: 'recordings' is not a list")
    recs = []
    for k, r in enumerate(d["recordings"]):
        if not isinstance(r, dict) or not isinstance(r.get("file"), str) or not r["file"]:
            raise SlurpFormatError(f"{where}: recording {k} has no 'file'")
        recs.append(r["file"])
    try:
        target = serialise(scenario, action, entities, transcript)
    except ValueError as err:
        raise SlurpFormatError(f"{where}: {err}") from None
    return {
        "slurp_id": d["slurp_id"],
        "scenario": scenario,
        "action": action,
        "intent": f"{scenario}_{action}",
        "transcript": transcript,
        "entities": entities,
        "target": target,
        "recordings": recs,
    }


def _options_key(data_folder: Path, splits, max_duration, headset_only, skip_bad, audio_check) -> dict:
    files = {}
    for split in splits:
        p = find_jsonl(data_folder, split)
        if p is not None:
            st = p.stat()
            files[split] = [str(p.resolve()), st.st_size, st.st_mtime_ns]
    return {
        "version": 2,  # 2: repeated slurp_ids / recordings counted (duplicate_* / conflicting_*)
        "data_folder": str(data_folder.resolve()),
        "splits": list(splits),
        "max_duration": max_duration,
        "headset_only": headset_only,
        "skip_bad": skip_bad,
        "audio_check": audio_check,
        "jsonl": files,
    }


def _check_prepare_args(
    data_folder: Path, out_dir: Path, splits, max_duration: float | None, audio_check: bool
) -> None:
    """Raise on a missing data folder, an ``out_dir`` inside it, ``max_duration`` without audio, unknown splits."""
    if not data_folder.is_dir():
        raise FileNotFoundError(f"SLURP data folder not found: {data_folder}")
    if out_dir.resolve() == data_folder.resolve() or data_folder.resolve() in out_dir.resolve().parents:
        raise ValueError(f"manifests must not go into the data folder: {out_dir}")
    if max_duration is not None and not audio_check:
        raise ValueError("max_duration needs audio_check=True (durations come from the audio files)")
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected some of {SPLITS}")


def _reusable(report_path: Path, key: dict) -> tuple[dict[str, Path], PrepareReport] | None:
    """The manifests and report of an earlier run with the same options (``key``) whose CSVs all exist, else None."""
    if not report_path.is_file():
        return None
    try:
        old = json.loads(report_path.read_text())
        paths = {s: Path(p) for s, p in old.get("csv", {}).items()}
        if old.get("options") == key and all(p.is_file() for p in paths.values()):
            logger.info("SLURP manifests in %s are up to date: reusing them", report_path.parent)
            return paths, PrepareReport(**old["report"])
    except (ValueError, KeyError, TypeError):
        pass
    return None


class _SplitReader:
    """Reads one split's jsonl into manifest rows: skips by reason, repeats of slurp_ids and recordings (the first
    occurrence of each is remembered with its ``file:line`` and labels), audio checks.

    ``unknown`` (labels outside the built-in inventory) is shared by all splits; ``sf`` is the soundfile module when
    audio is checked, else None.
    """

    def __init__(
        self,
        data_folder: Path,
        split: str,
        headset_only: bool,
        skip_bad: bool,
        max_duration: float | None,
        unknown: Counter,
        sf: ModuleType | None = None,
    ) -> None:
        self.sub = audio_subdir(data_folder, split)
        self.audio_dir = data_folder / self.sub
        self.headset_only, self.skip_bad, self.max_duration = headset_only, skip_bad, max_duration
        self.unknown = unknown
        self.sf = sf
        self.skipped: Counter = Counter()
        self.rows: list[list] = []
        self.first_sent: dict[str, tuple[str, dict]] = {}  # slurp_id -> (file:line, labels) of its first line
        self.first_rec: dict[str, tuple[str, dict]] = {}  # recording ID -> (file:line, labels + file) of its first row
        self.n_sent = 0

    def read(self, jsonl: Path) -> None:
        with open(jsonl, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.strip():
                    self._line(raw, f"{jsonl}:{lineno}")

    def _line(self, raw: bytes, where: str) -> None:
        try:
            _, sent = load_line(raw, where)
        except SlurpFormatError as err:
            if not self.skip_bad:
                raise
            self.skipped[_reason_of(err)] += 1
            logger.warning("skipped: %s", err)
            return
        labels = _labels(sent)
        if not self._sentence(sent, labels, where):
            return
        ents_json = json.dumps(sent["entities"], ensure_ascii=False)
        for fname in sent["recordings"]:
            self._recording(sent, labels, fname, ents_json, where)

    def _sentence(self, sent: dict, labels: dict, where: str) -> bool:
        """Count a new slurp_id (and its unknown labels) or a repeat; False: a conflicting repeat, skipped."""
        sid = str(sent["slurp_id"])
        if sid in self.first_sent:
            where0, labels0 = self.first_sent[sid]
            if labels0 != labels:
                _skip_or_raise(
                    self.skipped,
                    self.skip_bad,
                    "conflicting_slurp_id",
                    f"{where}: slurp_id {sid} was first read at {where0} with other labels "
                    f"({_differences(labels0, labels)}) (conflicting_slurp_id)",
                )
                return False
            self.skipped["duplicate_slurp_id"] += 1
            logger.warning(
                "%s: slurp_id %s repeats %s with the same labels (duplicate_slurp_id): kept once", where, sid, where0
            )
            return True
        self.first_sent[sid] = (where, labels)
        self.n_sent += 1
        if sent["intent"] not in _KNOWN_INTENTS:
            self.unknown[f"intent:{sent['intent']}"] += 1
        for e in sent["entities"]:
            if e["type"] not in _ENTITY_SET:
                self.unknown[f"entity_type:{e['type']}"] += 1
        return True

    def _recording(self, sent: dict, labels: dict, fname: str, ents_json: str, where: str) -> None:
        """Append the manifest row of one recording, unless it is skipped (not headset, repeat, audio)."""
        if self.headset_only and "-headset" not in fname:
            self.skipped["not_headset"] += 1
            return
        uid = Path(fname).stem
        rec_labels = dict(labels, file=fname)
        if uid in self.first_rec:
            where0, labels0 = self.first_rec[uid]
            if labels0 != rec_labels:
                _skip_or_raise(
                    self.skipped,
                    self.skip_bad,
                    "conflicting_recording",
                    f"{where}: recording {uid} was first read at {where0} with other labels "
                    f"({_differences(labels0, rec_labels)}) (conflicting_recording)",
                )
                return
            self.skipped["duplicate_recording"] += 1
            logger.warning(
                "%s: recording %s repeats %s with the same labels (duplicate_recording): kept once",
                where,
                fname,
                where0,
            )
            return
        self.first_rec[uid] = (where, rec_labels)
        duration = -1.0
        if self.sf is not None:
            duration = self._duration(fname, where)
            if duration is None:
                return
        self.rows.append(
            [
                uid,
                f"$data_root/{self.sub}/{fname}",
                f"{duration:.3f}",
                sent["slurp_id"],
                sent["scenario"],
                sent["action"],
                sent["intent"],
                sent["transcript"],
                ents_json,
                sent["target"],
            ]
        )

    def _duration(self, fname: str, where: str) -> float | None:
        """Seconds of ``audio_dir/fname`` from its header; None when it is skipped (missing, unreadable, too long)."""
        apath = self.audio_dir / fname
        if not apath.is_file():
            _skip_or_raise(
                self.skipped, self.skip_bad, "missing_audio", f"{where}: missing audio {apath} (missing_audio)"
            )
            return None
        try:
            info = self.sf.info(str(apath))
            duration = float(info.frames) / float(info.samplerate)
        except Exception as err:
            _skip_or_raise(
                self.skipped,
                self.skip_bad,
                "unreadable_audio",
                f"{where}: unreadable audio {apath}: {err} (unreadable_audio)",
            )
            return None
        if self.max_duration is not None and duration > self.max_duration:
            self.skipped["too_long"] += 1
            return None
        return duration


def prepare_slurp_with_report(
    data_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: tuple[str, ...] | list[str] = SPLITS,
    max_duration: float | None = None,
    headset_only: bool = False,
    skip_bad: bool = False,
    audio_check: bool = True,
    reuse: bool = True,
) -> tuple[dict[str, Path], PrepareReport]:
    """Like :func:`prepare_slurp`, and also returns the :class:`PrepareReport`."""
    t0 = time.perf_counter()
    data_folder = Path(data_folder)
    out_dir = Path(out_dir)
    _check_prepare_args(data_folder, out_dir, splits, max_duration, audio_check)
    key = _options_key(data_folder, splits, max_duration, headset_only, skip_bad, audio_check)
    report_path = out_dir / REPORT_NAME
    if reuse:
        reused = _reusable(report_path, key)
        if reused is not None:
            return reused
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(audio_check=audio_check)
    unknown: Counter = Counter()
    paths: dict[str, Path] = {}
    sf = None
    if audio_check:
        import soundfile as sf
    for split in splits:
        jsonl = find_jsonl(data_folder, split)
        if jsonl is None:
            logger.warning("no %s.jsonl under %s: split skipped", split, data_folder)
            report.missing_splits.append(split)
            continue
        reader = _SplitReader(data_folder, split, headset_only, skip_bad, max_duration, unknown, sf)
        reader.read(jsonl)
        csv_path = out_dir / f"{split}.csv"
        _write_csv(csv_path, reader.rows)
        paths[split] = csv_path
        report.rows[split] = len(reader.rows)
        report.sentences[split] = reader.n_sent
        report.skipped[split] = dict(reader.skipped)
        logger.info(
            "%s: %d recordings of %d sentences -> %s (skipped: %s)",
            split,
            len(reader.rows),
            reader.n_sent,
            csv_path,
            dict(reader.skipped),
        )
    if not paths:
        raise FileNotFoundError(f"none of the splits {list(splits)} has a jsonl file under {data_folder}")
    if unknown:
        logger.warning("labels outside the built-in SLURP inventory (kept): %s", dict(unknown))
    report.unknown_labels = dict(unknown)
    report.seconds = time.perf_counter() - t0
    atomic_write_json(
        report_path, {"options": key, "csv": {s: str(p) for s, p in paths.items()}, "report": asdict(report)}
    )
    return paths, report


def _skip_or_raise(skipped: Counter, skip_bad: bool, reason: str, msg: str) -> None:
    """Raise :class:`SlurpFormatError` (``msg``), or with ``skip_bad`` count ``reason`` and log ``msg``."""
    if not skip_bad:
        raise SlurpFormatError(msg)
    skipped[reason] += 1
    logger.warning("skipped: %s", msg)


def _labels(sent: dict) -> dict:
    """The fields two lines with one slurp_id must agree on."""
    return {
        "scenario": sent["scenario"],
        "action": sent["action"],
        "sentence": sent["transcript"],
        "entities": sent["entities"],
    }


def _differences(a: dict, b: dict) -> str:
    return "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


_KNOWN_INTENTS = frozenset(f"{s}_{a}" for s, acts in SLURP_SCENARIO_ACTIONS.items() for a in acts)


def _write_csv(path: Path, rows: list[list]) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def prepare_slurp(
    data_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: tuple[str, ...] | list[str] = SPLITS,
    max_duration: float | None = None,
    headset_only: bool = False,
    skip_bad: bool = False,
    audio_check: bool = True,
    reuse: bool = True,
) -> dict[str, Path]:
    """Write ``out_dir/<split>.csv`` for every split whose jsonl exists; returns {split: csv path}.

    ``max_duration``: drop recordings longer than this many seconds. ``headset_only``: keep only ``*-headset``
    recordings. ``audio_check=False``: metadata only (no audio needed; duration -1). ``skip_bad``: skip and count bad
    lines/recordings instead of raising. The report goes to ``out_dir/prepare_report.json``
    (:func:`read_prepare_report`). With ``reuse``, manifests made with the same options and jsonl files are kept.
    """
    paths, _ = prepare_slurp_with_report(
        data_folder, out_dir, splits, max_duration, headset_only, skip_bad, audio_check, reuse
    )
    return paths


def read_prepare_report(out_dir: str | os.PathLike) -> PrepareReport:
    """The :class:`PrepareReport` written by the last :func:`prepare_slurp` into ``out_dir``."""
    d = json.loads((Path(out_dir) / REPORT_NAME).read_text())
    return PrepareReport(**d["report"])


#: columns :func:`read_manifest` needs (``slurp_id`` is informative only)
REQUIRED_COLUMNS = tuple(c for c in COLUMNS if c != "slurp_id")


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of an SLU manifest (:func:`prepare_slurp`) as dicts, ``entities`` decoded (a JSON list) and
    ``duration`` as float. A missing column (:data:`REQUIRED_COLUMNS`), a row with too few or too many fields, a bad
    number, bad JSON or non-UTF-8 text raises :class:`SlurpFormatError` naming ``file:line``."""
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SlurpFormatError(f"{path}:1: not an SLU manifest (missing columns {missing})")
            for r in reader:
                where = f"{path}:{reader.line_num}"
                if None in r or any(v is None for v in r.values()):
                    raise SlurpFormatError(f"{where}: bad manifest row (wrong number of fields)")
                try:
                    r["entities"] = json.loads(r["entities"])
                    r["duration"] = float(r["duration"])
                except ValueError as err:
                    raise SlurpFormatError(
                        f"{where}: bad manifest row (field 'entities' or 'duration': {err})"
                    ) from None
                if not isinstance(r["entities"], list):
                    raise SlurpFormatError(f"{where}: bad manifest row (field 'entities' is not a JSON list)")
                rows.append(r)
    except UnicodeDecodeError as err:
        raise SlurpFormatError(f"{path}: not UTF-8 ({err})") from None
    return rows
