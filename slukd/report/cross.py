"""The cross table: every KD term of the core on both tasks, and the continual methods beside the paper's rows
(``slukd report PATH... --cross``).

Rows are fixed pairs (row, its baseline) per task, so each cell is one comparison that a single setting makes:

- KD terms: SLU rows on the paper's KD base (1% herding rehearsal) against that base; captioning students with the
  term alone against the supervised student. The contrastive SLU row applies KD to every item of the batch (the
  other clips are its negatives) and adds it to the loss (``kd_scope: all``, ``kd_mode: sum``), the other SLU
  terms act on the memory items with the paper's alpha weighting: the table says so.
- continual methods (SLU): each method against fine-tuning (the same model and budget without any method), and the
  ones that keep a 1% memory also against random 1% rehearsal.

Each cell: the row's mean ± std over its seeds, and the difference to its baseline with its 95% interval
(:mod:`slukd.report.stats`: paired by seed within a SLU split, Welch for captioning), marked ``*`` when the interval
excludes 0. A cell whose runs are missing says so; incomplete runs never enter (``slukd report`` lists them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["KD_TERMS", "CONTINUAL_METHODS", "cross_table"]

#: (KD term, SLU row, SLU baseline, captioning row, captioning baseline)
KD_TERMS = [
    ("encoder MSE (the SLU paper's audio-KD)", "audio_kd", "rehearsal_herding", "student_mse", "student_supervised"),
    ("encoder contrastive (InfoNCE)", "contrastive_kd", "rehearsal_herding", "student_contrastive",
     "student_supervised"),
    ("token KD", "tok_kd", "rehearsal_herding", "student_tokkd", "student_supervised"),
    ("sequence KD", "seq_kd", "rehearsal_herding", "student_seqkd", "student_supervised"),
]  # fmt: skip

#: (method, SLU row, baselines it is compared with)
CONTINUAL_METHODS = [
    ("rehearsal 1% random", "rehearsal_random", ["finetune"]),
    ("rehearsal 1% herding (the paper's KD base)", "rehearsal_herding", ["finetune"]),
    ("+ seq-KD (the paper's best single term)", "seq_kd", ["finetune", "rehearsal_herding"]),
    ("EWC (online)", "ewc", ["finetune"]),
    ("MAS", "mas", ["finetune"]),
    ("LwF (token KD on every item, no memory)", "lwf", ["finetune"]),
    ("A-GEM (1% random memory, not replayed)", "agem", ["finetune", "rehearsal_random"]),
    ("DER++ (1% random memory + stored logits)", "derpp", ["finetune", "rehearsal_random"]),
    ("contrastive KD (+ 1% herding)", "contrastive_kd", ["finetune", "rehearsal_herding"]),
]


def _index(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(split or "captioning", row name): aggregated row}; a row name with several settings groups keeps the one
    labelled with the bare name (the others are reported by ``slukd report`` under their labels)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        where = "captioning" if r["kind"] == "captioning" else str(r.get("split"))
        key = (where, r["row"])
        if key not in out or r["label"] == r["row"]:
            out[key] = r
    return out


def _value(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return "no runs"
    m, sd = row[key]
    if m is None or math.isnan(m):
        return "-"
    return f"{m:.2f} ± {sd:.2f} (n={row['n']})" if row["n"] > 1 else f"{m:.2f} (n=1)"


def _steps(row: dict[str, Any] | None) -> str:
    """Optimiser steps per run as whole numbers (the main table's cell), or "-" where the runs did not record them."""
    from slukd.report.table import _cell

    if row is None or "optimizer_steps" not in row:
        return "-"
    return _cell(*row["optimizer_steps"], row["n"], "steps")


def _delta(row: dict[str, Any] | None, base: dict[str, Any] | None, key: str) -> str:
    from slukd.report.table import delta_text, difference

    if row is None or base is None:
        return "-"
    return delta_text(difference(row, base, key))


def _nearest_split(joint: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str | None:
    """The continual split whose runs share the deepest folder with the joint row's runs (the sweep that ran it), or
    None when no single split is nearest."""
    if not joint.get("runs"):
        return None
    depth: dict[str, int] = {}
    for r in rows:
        s = r.get("split")
        if r["kind"] == "captioning" or s in (None, "joint") or not r.get("runs"):
            continue
        common = os.path.commonpath([os.path.abspath(joint["runs"][0]), os.path.abspath(r["runs"][0])])
        depth[s] = max(depth.get(s, 0), len(Path(common).parts))
    if not depth:
        return None
    best = max(depth.values())
    nearest = [s for s, d in depth.items() if d == best]
    return nearest[0] if len(nearest) == 1 else None


def cross_table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown cross tables (KD terms x tasks; continual methods x SLU splits) from aggregated rows
    (:func:`slukd.report.table.aggregate` of complete runs)."""
    idx = _index(rows)
    # joint trains one task on everything (the offline upper bound): not a continual split, shown as a reference line
    splits = sorted({w for (w, _) in idx if w not in ("captioning", "joint")})
    intro = (
        "Each cell: mean ± std over seeds (n runs), then the difference to the baseline with its 95% interval "
        "(`*`: excludes 0). SLU: Avg Acc (%) against `rehearsal_herding` (paired by seed); captioning: CIDEr-D (%) "
        "against `student_supervised` (Welch). SLU contrastive KD runs on every item and is added to the loss "
        "(`kd_scope: all`, `kd_mode: sum`); the other SLU terms act on the memory items, alpha-weighted."
    )
    lines = ["## KD terms of the core, on both tasks", "", intro, ""]
    head = ["KD term", *(f"{s}: Avg Acc" for s in splits), *(f"{s}: Δ" for s in splits)]
    head += ["captioning: CIDEr-D", "captioning: Δ"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, slu_row, slu_base, cap_row, cap_base in KD_TERMS:
        cells = [name]
        cells += [_value(idx.get((s, slu_row)), "avg_acc") for s in splits]
        cells += [_delta(idx.get((s, slu_row)), idx.get((s, slu_base)), "avg_acc") for s in splits]
        cap, cb = idx.get(("captioning", cap_row)), idx.get(("captioning", cap_base))
        cells += [_value(cap, "CIDEr_D"), _delta(cap, cb, "CIDEr_D")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Continual-learning methods (SLU)", "",
              "Avg Acc and Last Acc (%), mean ± std (n runs); Δ: Avg Acc difference to each baseline, paired by seed, "
              "95% interval (`*`: excludes 0). Every row has the same model, epochs and task 1.", ""]  # fmt: skip
    for s in splits:
        head = ["method", "row", "Avg Acc", "Last Acc", "Optimiser steps", "Δ vs baselines"]
        lines += [f"### {s}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, row, bases in CONTINUAL_METHODS:
            r = idx.get((s, row))
            deltas = "; ".join(f"{b}: {_delta(r, idx.get((s, b)), 'avg_acc')}" for b in bases)
            steps = _steps(r)
            lines.append(f"| {name} | {row} | {_value(r, 'avg_acc')} | {_value(r, 'last_acc')} | {steps} | {deltas} |")
        lines.append("")
    for r in rows:  # every settings group of joint (e.g. one per sweep with its own epochs), named by its label
        if r["kind"] != "captioning" and r.get("split") == "joint":
            near = _nearest_split(r, rows)
            beside = f" beside {near}" if near else ""
            lines += [f"Joint (offline upper bound){beside}, `{r['label']}`: Avg Acc {_value(r, 'avg_acc')}, optimiser "
                      f"steps {_steps(r)}.", ""]  # fmt: skip
    return "\n".join(lines) + "\n"
