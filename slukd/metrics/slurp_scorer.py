"""SLURP scoring: scenario / action / intent accuracy, span-F1, word- and char-distance span F1 and SLU-F1.

This reproduces the behaviour of SLURP's official evaluation script (as specified in
``../shared/docs/slurp_scoring.md``) without depending on it:

* Per label ``l`` float counts TP, FP, FN; ``P = TP/(TP+FP)``, ``R = TP/(TP+FN)``, ``F1 = 2PR/(P+R)``, each 0 when
  its denominator is 0. ``micro`` (default, what papers report) sums the counts over labels first; ``macro``
  averages the per-label P, R and F1 (each separately) over every label that has any count.
* Scenario / action / intent: per scored item, ``pred == gold`` -> ``TP[pred] += 1``, else ``FP[pred] += 1`` and
  ``FN[gold] += 1``. The gold intent is ``scenario + "_" + action`` (the raw ``intent`` field is never used).
* Span-F1: predicted entities in order; one equal (type and filler, exact strings) to a remaining gold entity is a TP
  and consumes it, otherwise FP. Leftover gold entities are FN.
* Span-distance-F1 with distance ``d``: predicted entities in order; when a remaining gold entity has the same type,
  the one with the smallest ``d(gold filler, pred filler)`` (first on ties) is consumed and ``TP += 1, FP += d,
  FN += d`` (the official script's quirk); otherwise ``FP += 1``. Leftover gold entities give ``FN += 1``.
  Word distance: word-level Levenshtein distance / number of gold words (whitespace split, case sensitive, can exceed
  1). Char distance: character Levenshtein distance / max(len(gold), len(pred)), in [0, 1].
* SLU-F1: the per-label counts of the word- and the char-distance runs are added, then P, R, F1 are computed.

Gold items with no prediction are skipped (as the official script does) but always counted (``n_missing``);
``missing="error"`` scores them as wrong instead. Prediction keys absent from gold are ignored (``n_extra``);
for duplicate prediction keys the last one wins (``n_duplicates``).

Library use (no files)::

    scores = score_slurp(gold_items, predictions)   # dicts {key, scenario, action, entities: [{type, filler}]}
    scores.to_dict()["slu_f1"]

CLI: ``slukd score slurp --gold test.jsonl --pred predictions.jsonl [--gold_transcripts] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the one error class for SLURP-format input (gold, predictions, manifests); importable from here too
from slukd.data.slurp import SlurpFormatError

logger = logging.getLogger(__name__)

try:  # rapidfuzz ships with jiwer; the pure-Python fallback gives identical distances.
    from rapidfuzz.distance import Levenshtein as _RFLevenshtein

    def levenshtein(a: Sequence, b: Sequence) -> int:
        """Edit distance (unit-cost insert / delete / substitute) between two strings or sequences of strings."""
        return int(_RFLevenshtein.distance(a, b))

except ImportError:  # pragma: no cover - exercised only without rapidfuzz

    def levenshtein(a: Sequence, b: Sequence) -> int:
        """Edit distance (unit-cost insert / delete / substitute) between two strings or sequences of strings."""
        return levenshtein_py(a, b)


def levenshtein_py(a: Sequence, b: Sequence) -> int:
    """Plain dynamic-programming Levenshtein distance (reference implementation, O(len(a) * len(b)))."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def word_distance(gold: str, pred: str) -> float:
    """WER of ``pred`` against ``gold``: word Levenshtein / len(gold words); whitespace split, case sensitive.

    An empty gold filler (never produced from SLURP spans) gives 0.0 when the prediction is empty too, else 1.0.
    """
    g, p = gold.split(), pred.split()
    if not g:
        return 0.0 if not p else 1.0
    return levenshtein(g, p) / len(g)


def char_distance(gold: str, pred: str) -> float:
    """Character Levenshtein distance / max(len(gold), len(pred)), in [0, 1]; 0.0 when both are empty."""
    n = max(len(gold), len(pred))
    if n == 0:
        return 0.0
    return levenshtein(gold, pred) / n


DISTANCES = {"word": word_distance, "char": char_distance}
METRICS = ("scenario", "action", "intent", "span", "word", "char", "slu")


# --------------------------------------------------------------------------------------------------------------------
# counts and results


class _Counts:
    """Per-label float TP / FP / FN counts."""

    __slots__ = ("tp", "fp", "fn")

    def __init__(self) -> None:
        self.tp: defaultdict[str, float] = defaultdict(float)
        self.fp: defaultdict[str, float] = defaultdict(float)
        self.fn: defaultdict[str, float] = defaultdict(float)

    def labels(self) -> list[str]:
        return sorted(set(self.tp) | set(self.fp) | set(self.fn))

    def __add__(self, other: _Counts) -> _Counts:
        out = _Counts()
        for src in (self, other):
            for name in ("tp", "fp", "fn"):
                dst = getattr(out, name)
                for k, v in getattr(src, name).items():
                    dst[k] += v
        return out


@dataclass(frozen=True)
class PRF:
    """Precision, recall, F1 and the (float) counts they come from."""

    precision: float
    recall: float
    f1: float
    tp: float
    fp: float
    fn: float

    @staticmethod
    def from_counts(tp: float, fp: float, fn: float) -> PRF:
        p = tp / (tp + fp) if tp + fp > 0 else 0.0
        r = tp / (tp + fn) if tp + fn > 0 else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        return PRF(p, r, f, tp, fp, fn)

    def to_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "tp": self.tp, "fp": self.fp,
                "fn": self.fn}  # fmt: skip


def _aggregate(counts: _Counts, average: str) -> tuple[PRF, dict[str, PRF]]:
    labels = counts.labels()
    per = {lab: PRF.from_counts(counts.tp[lab], counts.fp[lab], counts.fn[lab]) for lab in labels}
    tp, fp, fn = sum(counts.tp.values()), sum(counts.fp.values()), sum(counts.fn.values())
    if average == "micro":
        return PRF.from_counts(tp, fp, fn), per
    n = len(per)
    if n == 0:
        return PRF(0.0, 0.0, 0.0, tp, fp, fn), per
    return (
        PRF(
            sum(x.precision for x in per.values()) / n,
            sum(x.recall for x in per.values()) / n,
            sum(x.f1 for x in per.values()) / n,
            tp,
            fp,
            fn,
        ),
        per,
    )


@dataclass
class SlurpScores:
    """Result of :func:`score_slurp`. ``overall[m]`` for m in :data:`METRICS`; ``per_label[m][label]`` on request.

    ``*_acc`` are plain accuracies (correct / scored items); under micro averaging they equal that metric's P, R, F1.
    """

    overall: dict[str, PRF]
    accuracy: dict[str, float]
    n_gold: int
    n_pred: int
    n_scored: int
    n_missing: int
    n_extra: int
    n_duplicates: int
    n_bad_entities: int = 0
    average: str = "micro"
    missing: str = "skip"
    missing_keys: list[str] = field(default_factory=list)
    per_label: dict[str, dict[str, PRF]] | None = None

    @property
    def scenario_acc(self) -> float:
        return self.accuracy["scenario"]

    @property
    def action_acc(self) -> float:
        return self.accuracy["action"]

    @property
    def intent_acc(self) -> float:
        return self.accuracy["intent"]

    @property
    def span_f1(self) -> float:
        return self.overall["span"].f1

    @property
    def word_f1(self) -> float:
        return self.overall["word"].f1

    @property
    def char_f1(self) -> float:
        return self.overall["char"].f1

    @property
    def slu_f1(self) -> float:
        return self.overall["slu"].f1

    def to_dict(self, per_label: bool = False) -> dict[str, Any]:
        """Flat dict: scenario_acc, ..., span_f1, word_f1, char_f1, slu_p, slu_r, slu_f1, n_gold, n_missing, ...

        For every metric m: ``m_p``, ``m_r``, ``m_f1`` (following ``average``); with ``per_label`` a nested
        ``per_label`` entry {metric: {label: {precision, recall, f1, tp, fp, fn}}} is added.
        """
        out: dict[str, Any] = {f"{m}_acc": self.accuracy[m] for m in ("scenario", "action", "intent")}
        for m in METRICS:
            prf = self.overall[m]
            out[f"{m}_p"], out[f"{m}_r"], out[f"{m}_f1"] = prf.precision, prf.recall, prf.f1
        out.update(
            n_gold=self.n_gold,
            n_pred=self.n_pred,
            n_scored=self.n_scored,
            n_missing=self.n_missing,
            n_extra=self.n_extra,
            n_duplicates=self.n_duplicates,
            n_bad_entities=self.n_bad_entities,
            average=self.average,
            missing=self.missing,
        )
        if per_label and self.per_label is not None:
            out["per_label"] = {
                m: {lab: prf.to_dict() for lab, prf in labs.items()} for m, labs in self.per_label.items()
            }
        return out


# --------------------------------------------------------------------------------------------------------------------
# validation helpers


def _check_entities(entities: Any, where: str, bad: str) -> tuple[list[tuple[str, str]], int]:
    """Entities -> [(type, filler)]. Anything but a dict with exactly string ``type`` and ``filler`` is bad:
    raised (``bad="raise"``) or dropped and counted (``bad="skip"``)."""
    if not isinstance(entities, list):
        raise SlurpFormatError(f"{where}: 'entities' must be a list, got {type(entities).__name__}")
    out: list[tuple[str, str]] = []
    n_bad = 0
    for k, ent in enumerate(entities):
        if (
            isinstance(ent, dict)
            and ent.keys() == {"type", "filler"}
            and isinstance(ent["type"], str)
            and isinstance(ent["filler"], str)
        ):
            out.append((ent["type"], ent["filler"]))
            continue
        msg = f"{where}: entity {k} is not {{'type': str, 'filler': str}}: {json.dumps(ent)[:200]}"
        if bad == "raise":
            raise SlurpFormatError(msg + " (use bad_entities='skip' / --skip_bad_entities to drop and count)")
        logger.warning("%s; dropped", msg)
        n_bad += 1
    return out, n_bad


def _iter_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise SlurpFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise SlurpFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


# --------------------------------------------------------------------------------------------------------------------
# loaders


def load_gold(path: str | os.PathLike, key: str = "file") -> list[dict[str, Any]]:
    """Read a SLURP gold jsonl into items {key, scenario, action, entities: [{type, filler}]}.

    ``key="file"``: one item per recording (keyed by ``recordings[].file``); ``key="slurp_id"``: one item per sentence
    (gold-transcript evaluation), keyed by ``str(slurp_id)``. The gold filler is the lower-cased token surfaces of the
    entity span joined by single spaces.
    """
    if key not in ("file", "slurp_id"):
        raise ValueError(f"key must be 'file' or 'slurp_id', got {key!r}")
    path = Path(path)
    items: list[dict[str, Any]] = []
    for lineno, ex in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        for fld in ("slurp_id", "scenario", "action", "tokens", "entities") + (
            ("recordings",) if key == "file" else ()
        ):
            if fld not in ex:
                raise SlurpFormatError(f"{where}: gold line lacks field '{fld}'")
        try:
            surfaces = [tok["surface"] for tok in ex["tokens"]]
            entities = []
            for k, ent in enumerate(ex["entities"]):
                if not isinstance(ent, dict) or "type" not in ent or "span" not in ent:
                    raise SlurpFormatError(f"{where}: gold entity {k} lacks 'type' or 'span'")
                idx = ent["span"]
                if not isinstance(idx, list) or not all(isinstance(i, int) and 0 <= i < len(surfaces) for i in idx):
                    raise SlurpFormatError(f"{where}: gold entity {k} has span {idx!r} outside 0..{len(surfaces) - 1}")
                entities.append({"type": ent["type"], "filler": " ".join(surfaces[i].lower() for i in idx)})
        except (TypeError, KeyError) as err:
            raise SlurpFormatError(f"{where}: malformed tokens/entities ({err!r})") from None
        base = {"scenario": ex["scenario"], "action": ex["action"], "entities": entities}
        if key == "slurp_id":
            items.append({"key": str(ex["slurp_id"]), **base})
        else:
            for rec in ex["recordings"]:
                if not isinstance(rec, dict) or "file" not in rec:
                    raise SlurpFormatError(f"{where}: a recording lacks field 'file'")
                items.append({"key": str(rec["file"]), **base, "entities": [dict(e) for e in entities]})
    logger.info("loaded %d gold items (key=%s) from %s", len(items), key, path)
    return items


def load_predictions(path: str | os.PathLike, key: str = "file") -> list[dict[str, Any]]:
    """Read a predictions jsonl ({<key>, scenario, action, entities: [{type, filler}]} per line) into items
    {key, scenario, action, entities, line}. Missing fields or non-JSON lines raise :class:`SlurpFormatError` with the
    line number; entity checks happen in :func:`score_slurp` (which knows the bad-entity policy)."""
    if key not in ("file", "slurp_id"):
        raise ValueError(f"key must be 'file' or 'slurp_id', got {key!r}")
    path = Path(path)
    items: list[dict[str, Any]] = []
    for lineno, ex in _iter_jsonl(path):
        if key not in ex:
            other = "slurp_id" if key == "file" else "file"
            hint = (
                f" (it has '{other}': use "
                + ("--gold_transcripts / key='slurp_id')" if other == "slurp_id" else "key='file')")
                if other in ex
                else ""
            )
            raise SlurpFormatError(f"{path}:{lineno}: prediction lacks field '{key}'{hint}")
        for fld in ("scenario", "action", "entities"):
            if fld not in ex:
                raise SlurpFormatError(f"{path}:{lineno}: prediction lacks field '{fld}'")
        items.append(
            {
                "key": str(ex[key]),
                "scenario": ex["scenario"],
                "action": ex["action"],
                "entities": ex["entities"],
                "source": str(path),
                "line": lineno,
            }
        )
    if not items:  # scoring nothing would print every metric as 0.00
        raise SlurpFormatError(f"{path}: no predictions (the file has no prediction lines)")
    logger.info("loaded %d predictions (key=%s) from %s", len(items), key, path)
    return items


# --------------------------------------------------------------------------------------------------------------------
# scoring


def _span_exact(gold: list[tuple[str, str]], pred: list[tuple[str, str]], c: _Counts) -> None:
    remaining = list(gold)
    for ent in pred:
        if ent in remaining:
            c.tp[ent[0]] += 1.0
            remaining.remove(ent)
        else:
            c.fp[ent[0]] += 1.0
    for typ, _ in remaining:
        c.fn[typ] += 1.0


def _span_distance(gold: list[tuple[str, str]], pred: list[tuple[str, str]], dist, c: _Counts) -> None:
    remaining = list(gold)
    for typ, filler in pred:
        best_i, best_d = -1, 0.0
        for i, (gtyp, gfill) in enumerate(remaining):
            if gtyp != typ:
                continue
            d = dist(gfill, filler)
            if best_i < 0 or d < best_d:
                best_i, best_d = i, d
        if best_i < 0:
            c.fp[typ] += 1.0
            continue
        c.tp[typ] += 1.0
        c.fp[typ] += best_d
        c.fn[typ] += best_d
        del remaining[best_i]
    for typ, _ in remaining:
        c.fn[typ] += 1.0


def _label(counts: _Counts, gold: str, pred: str | None) -> bool:
    if pred is not None and pred == gold:
        counts.tp[pred] += 1.0
        return True
    if pred is not None:
        counts.fp[pred] += 1.0
    counts.fn[gold] += 1.0
    return False


def _check_score_options(average: str, missing: str, bad_entities: str) -> None:
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    if missing not in ("skip", "error"):
        raise ValueError(f"missing must be 'skip' or 'error', got {missing!r}")
    if bad_entities not in ("raise", "skip"):
        raise ValueError(f"bad_entities must be 'raise' or 'skip', got {bad_entities!r}")


def _gold_by_key(gold_items: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """{str(key): item}; an item lacking key, scenario, action or entities raises; duplicate keys: the last wins."""
    gold_list = list(gold_items)
    gold: dict[str, Mapping[str, Any]] = {}
    for n, g in enumerate(gold_list):
        try:
            gold[str(g["key"])] = g
            _ = g["scenario"], g["action"], g["entities"]
        except (KeyError, TypeError) as err:
            raise SlurpFormatError(f"gold item {n}: lacks field {err}") from None
    if len(gold) != len(gold_list):
        logger.warning("%d duplicate gold keys (the last one is used)", len(gold_list) - len(gold))
    return gold


def _predictions_by_key(
    predictions: Iterable[Mapping[str, Any]], bad_entities: str
) -> tuple[dict[str, tuple[Any, Any, list[tuple[str, str]]]], int, int]:
    """({str(key): (scenario, action, [(type, filler)])} with the last of duplicate keys, items read, bad entities
    dropped)."""
    pred: dict[str, tuple[Any, Any, list[tuple[str, str]]]] = {}
    n_pred = 0
    n_bad = 0
    for n, p in enumerate(predictions):
        n_pred += 1
        try:
            key, ps, pa, raw = str(p["key"]), p["scenario"], p["action"], p["entities"]
        except (KeyError, TypeError) as err:
            raise SlurpFormatError(f"{_pred_where(p, n)}: prediction lacks field {err}") from None
        pents, nb = _check_entities(raw, _pred_where(p, n), bad_entities)
        n_bad += nb
        pred[key] = (ps, pa, pents)
    return pred, n_pred, n_bad


def _count_all(
    gold: dict[str, Mapping[str, Any]], pred: dict[str, tuple[Any, Any, list[tuple[str, str]]]], missing: str
) -> tuple[dict[str, _Counts], dict[str, int], int, list[str]]:
    """Counts of every metric (``slu`` = word + char), correct scenario / action / intent, items scored and the keys
    of gold items with no prediction."""
    counts = {m: _Counts() for m in METRICS if m != "slu"}
    correct = {"scenario": 0, "action": 0, "intent": 0}
    n_scored = 0
    missing_keys: list[str] = []
    for gk, g in gold.items():
        gents, _ = _check_entities(g["entities"], f"gold item {gk!r}", "raise")
        p = pred.get(gk)
        if p is None:
            missing_keys.append(gk)
            if missing == "skip":
                continue
            ps = pa = pi = "<missing>"
            pents: list[tuple[str, str]] = []
        else:
            ps, pa, pents = p
            pi = f"{ps}_{pa}"
        n_scored += 1
        gs, ga = g["scenario"], g["action"]
        correct["scenario"] += _label(counts["scenario"], gs, ps)
        correct["action"] += _label(counts["action"], ga, pa)
        correct["intent"] += _label(counts["intent"], f"{gs}_{ga}", pi)
        _span_exact(gents, pents, counts["span"])
        _span_distance(gents, pents, word_distance, counts["word"])
        _span_distance(gents, pents, char_distance, counts["char"])
    counts["slu"] = counts["word"] + counts["char"]
    return counts, correct, n_scored, missing_keys


def score_slurp(
    gold_items: Iterable[Mapping[str, Any]],
    predictions: Iterable[Mapping[str, Any]],
    average: str = "micro",
    per_label: bool = False,
    missing: str = "skip",
    bad_entities: str = "raise",
) -> SlurpScores:
    """Score SLURP predictions against gold items, exactly like the official script by default.

    Args:
        gold_items: dicts {key, scenario, action, entities: [{type, filler}]} (see :func:`load_gold`).
        predictions: dicts {key, scenario, action, entities: [{type, filler}]}; duplicate keys: the last one wins.
        average: "micro" (default; sums counts over labels) or "macro" (mean of per-label P, R, F1).
        per_label: also keep per-label P/R/F1 and counts for every metric.
        missing: "skip" (official: gold items with no prediction are not scored, only counted) or "error" (they
            count as a wrong scenario/action/intent, with FP on the label "<missing>", and all their gold entities
            as FN).
        bad_entities: "raise" (default) or "skip" (drop, count in ``n_bad_entities`` and log) for predicted entities
            that are not {type: str, filler: str}.
    """
    _check_score_options(average, missing, bad_entities)
    gold = _gold_by_key(gold_items)
    pred, n_pred, n_bad = _predictions_by_key(predictions, bad_entities)
    n_dup = n_pred - len(pred)
    n_extra = sum(1 for k in pred if k not in gold)
    if n_dup:
        logger.warning("%d duplicate prediction keys (the last one wins)", n_dup)
    if n_extra:
        logger.info("%d prediction keys are not in gold (ignored)", n_extra)

    counts, correct, n_scored, missing_keys = _count_all(gold, pred, missing)
    if missing_keys:
        logger.warning("gold items not predicted: %d of %d (%s)", len(missing_keys), len(gold),
                       "skipped, as the official script does" if missing == "skip" else "scored as errors")  # fmt: skip
    overall: dict[str, PRF] = {}
    per: dict[str, dict[str, PRF]] = {}
    for m in METRICS:
        overall[m], per[m] = _aggregate(counts[m], average)
    accuracy = {m: (correct[m] / n_scored if n_scored else 0.0) for m in correct}
    return SlurpScores(
        overall=overall,
        accuracy=accuracy,
        n_gold=len(gold),
        n_pred=n_pred,
        n_scored=n_scored,
        n_missing=len(missing_keys),
        n_extra=n_extra,
        n_duplicates=n_dup,
        n_bad_entities=n_bad,
        average=average,
        missing=missing,
        missing_keys=missing_keys,
        per_label=per if per_label else None,
    )


def _pred_where(p: Any, n: int) -> str:
    if isinstance(p, Mapping) and "source" in p and "line" in p:
        return f"{p['source']}:{p['line']}"
    return f"prediction item {n}" + (f" (key {p['key']!r})" if isinstance(p, Mapping) and "key" in p else "")


def score_slurp_files(
    gold_path: str | os.PathLike,
    pred_path: str | os.PathLike,
    gold_transcripts: bool = False,
    **kwargs: Any,
) -> SlurpScores:
    """Load both files (keyed by recording file, or by slurp_id when ``gold_transcripts``) and :func:`score_slurp`."""
    key = "slurp_id" if gold_transcripts else "file"
    return score_slurp(load_gold(gold_path, key=key), load_predictions(pred_path, key=key), **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# CLI


def format_table(scores: SlurpScores, per_label: bool = False) -> str:
    """A readable plain-text table of the scores (percentages with 2 decimals)."""
    rows = [f"{'metric':<18}{'acc':>8}{'P':>8}{'R':>8}{'F1':>8}"]
    names = {"scenario": "scenario", "action": "action", "intent": "intent", "span": "span-F1",
             "word": "span word-dist", "char": "span char-dist", "slu": "SLU-F1"}  # fmt: skip
    for m in METRICS:
        prf = scores.overall[m]
        acc = f"{100 * scores.accuracy[m]:8.2f}" if m in scores.accuracy else " " * 8
        rows.append(f"{names[m]:<18}{acc}{100 * prf.precision:8.2f}{100 * prf.recall:8.2f}{100 * prf.f1:8.2f}")
    policy = "skipped, as the official script does" if scores.missing == "skip" else "scored as errors"
    rows.append("")
    rows.append(f"average: {scores.average}; scored {scores.n_scored} of {scores.n_gold} gold items")
    rows.append(f"not predicted: {scores.n_missing} of {scores.n_gold} ({policy})")
    if scores.n_extra or scores.n_duplicates or scores.n_bad_entities:
        rows.append(
            f"ignored: {scores.n_extra} prediction keys not in gold, {scores.n_duplicates} duplicates, "
            f"{scores.n_bad_entities} malformed entities"
        )
    if per_label and scores.per_label:
        for m in METRICS:
            rows.append("")
            rows.append(f"[{names[m]}] {'label':<30}{'P':>8}{'R':>8}{'F1':>8}{'TP':>10}{'FP':>10}{'FN':>10}")
            for lab, prf in scores.per_label[m].items():
                rows.append(
                    f"{'':<{len(names[m]) + 3}}{lab[:30]:<30}{100 * prf.precision:8.2f}{100 * prf.recall:8.2f}"
                    f"{100 * prf.f1:8.2f}{prf.tp:10.2f}{prf.fp:10.2f}{prf.fn:10.2f}"
                )
    return "\n".join(rows)


def cli_main(argv: list[str], prog: str = "slukd score slurp") -> int:
    """``slukd score slurp --gold G --pred P [--gold_transcripts] [--json] [--average macro] [--per_label] ...``"""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Score SLURP-format predictions (official SLURP metrics).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: slukd score slurp --gold data/slu_demo/dataset/slurp/test.jsonl "
        "--pred results/demo/joint/seed0/task1/predictions.jsonl",
    )
    ap.add_argument("--gold", required=True, help="gold SLURP jsonl (e.g. test.jsonl)")
    ap.add_argument("--pred", required=True, help="predictions jsonl: {file|slurp_id, scenario, action, entities}")
    ap.add_argument(
        "--gold_transcripts",
        "--gold-transcripts",
        action="store_true",
        help="key on slurp_id (gold-transcript evaluation)",
    )
    ap.add_argument("--average", choices=("micro", "macro"), default="micro", help="averaging of span F1 over labels")
    ap.add_argument("--per_label", "--per-label", action="store_true", help="also print/write per-label scores")
    ap.add_argument(
        "--count_missing", "--count-missing", action="store_true", help="score gold items with no prediction as errors"
    )
    ap.add_argument(
        "--skip_bad_entities",
        "--skip-bad-entities",
        action="store_true",
        help="drop and count malformed predicted entities",
    )
    ap.add_argument("--json", action="store_true", help="print JSON (flat keys) instead of the table")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    ap.add_argument(
        "--list_missing", "--list-missing", action="store_true", help="print the keys of gold items with no prediction"
    )
    args = ap.parse_args(argv)
    try:
        scores = score_slurp_files(
            args.gold,
            args.pred,
            gold_transcripts=args.gold_transcripts,
            average=args.average,
            per_label=args.per_label,
            missing="error" if args.count_missing else "skip",
            bad_entities="skip" if args.skip_bad_entities else "raise",
        )
    except (SlurpFormatError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    if scores.n_scored == 0:
        key = "slurp_id" if args.gold_transcripts else "file"
        print(f"{prog}: error: {args.pred}: none of its {scores.n_pred} predictions matches a gold item of "
              f"{args.gold} by {key}", file=sys.stderr)  # fmt: skip
        return 1
    result = scores.to_dict(per_label=args.per_label)
    result.update(gold=str(args.gold), pred=str(args.pred), key="slurp_id" if args.gold_transcripts else "file")
    if args.out:
        from slukd.utils.io import atomic_write_json

        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"SLURP scores: {args.pred} against {args.gold} (key: {result['key']})")
        print(format_table(scores, per_label=args.per_label))
    if args.list_missing:
        for k in scores.missing_keys:
            print(k, file=sys.stderr if args.json else sys.stdout)
    return 0
