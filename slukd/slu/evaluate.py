"""SLURP-format predictions and the per-step scores of the class-incremental recipe (decoding itself is
:func:`slukd.train.decode.decode_dataset`, shared with captioning).

- :func:`predictions`: parsed hypotheses -> SLURP prediction dicts ``{"file", "scenario", "action", "entities"}``
  (``file`` = the recording's file name, the key of SLURP's per-recording scoring).
- :func:`score_step`: intent accuracy, SLU-F1 and two word error rates per task seen and over all seen items:
  ``wer`` on the transcript part only (after :func:`slukd.metrics.wer.normalize_text`) and ``full_wer`` on the whole
  decoded target (intent, slots and transcript, split on whitespace, tags counted as words) against the gold target,
  the quantity the SLU paper's WER column reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from slukd.data.target import ParseStats, parse
from slukd.metrics.slurp_scorer import score_slurp
from slukd.metrics.wer import wer

logger = logging.getLogger(__name__)


def recording_key(wav: str) -> str:
    """The SLURP prediction key of a manifest row: the audio file name."""
    return os.path.basename(str(wav))


def predictions(rows: Sequence[dict], hyps: dict[str, str], stats: ParseStats | None = None) -> list[dict]:
    """SLURP predictions of ``rows`` (manifest dicts) from their hypotheses; rows without a hypothesis are skipped."""
    out = []
    for r in rows:
        if r["ID"] not in hyps:
            continue
        p = parse(hyps[r["ID"]], stats)
        out.append(
            {
                "file": recording_key(r["wav"]),
                "scenario": p.scenario,
                "action": p.action,
                "entities": [{"type": e["type"], "filler": e["filler"]} for e in p.entities],
                "transcript": p.transcript,
                "target": hyps[r["ID"]],
                "id": r["ID"],
            }
        )
    return out


def _metrics(rows: Sequence[dict], preds_by_id: dict[str, dict]) -> dict[str, float]:
    gold = [
        {
            "key": recording_key(r["wav"]),
            "scenario": r["scenario"],
            "action": r["action"],
            "entities": r["entities"],
        }
        for r in rows
    ]
    preds = [{**preds_by_id[r["ID"]], "key": recording_key(r["wav"])} for r in rows if r["ID"] in preds_by_id]
    scores = score_slurp(gold, preds, missing="error", bad_entities="skip")
    refs = [r["transcript"] for r in rows]
    hyps = [preds_by_id[r["ID"]]["transcript"] if r["ID"] in preds_by_id else "" for r in rows]
    full_refs = [r["target"] for r in rows]
    full_hyps = [preds_by_id[r["ID"]].get("target", "") if r["ID"] in preds_by_id else "" for r in rows]
    return {
        "n": len(rows),
        "intent_acc": scores.intent_acc,
        "scenario_acc": scores.scenario_acc,
        "wer": wer(refs, hyps) if rows else float("nan"),
        "full_wer": wer(full_refs, full_hyps, normalize=False) if rows else float("nan"),
        "slu_f1": scores.slu_f1,
        "span_f1": scores.span_f1,
    }


def score_step(
    rows: Sequence[dict],
    preds: Sequence[dict],
    task_of: Callable[[str], int | None],
    step: int,
) -> dict[str, Any]:
    """Scores after ``step`` (0-based) of the test ``rows`` of every seen task: ``per_task`` (one dict per task
    0..step) and ``seen`` (all those rows). Missing predictions count as errors."""
    by_id = {p["id"]: p for p in preds}
    per_task = []
    for j in range(step + 1):
        sub = [r for r in rows if task_of(r["scenario"]) == j]
        per_task.append({"task": j + 1, **_metrics(sub, by_id)})
    seen = [r for r in rows if (k := task_of(r["scenario"])) is not None and k <= step]
    return {"per_task": per_task, "seen": _metrics(seen, by_id)}
