"""The SLU paper's table and claims beside a table of runs (``slukd report PATH... --paper slurp3|slurp6``).

The reference numbers are Cappellazzo et al. (Interspeech 2023), real SLURP with a fine-tuned wav2vec2 encoder and
1% memory as a fixed quota per scenario (1260 items, 70 per scenario; slukd's ``memory_rule: fixed_quota``). The
paper's WER is over the whole decoded target (intent, slots and transcript), so it is compared with the runs'
full-target WER; the transcript-only WER is shown beside it.

Each claim is checked with the statistics of :mod:`slukd.report.stats` on the runs' per-seed values: continual rows
of one split are paired by seed (they share task 1), the joint row enters through Welch's interval. A claim
``holds`` only when every 95% interval it rests on lies on the claimed side of 0, ``does not hold`` when one lies
wholly on the other side, and is otherwise ``not shown with n seeds``. Only rows of the requested split (and the
joint row) enter; a row name that still has several settings groups is reported as ambiguous, never picked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from slukd.report.stats import Diff, missing_rows, verdict, verdict_all

__all__ = ["PAPER_SLU", "check_claims", "format_paper_section"]

#: (Avg Acc, Last Acc, Avg WER, SLU-F1) per row and scenario; None where the paper gives no number.
PAPER_SLU: dict[str, dict[str, tuple[float | None, ...]]] = {
    "slurp3": {
        "joint": (85.84, None, 20.46, 70.59),
        "finetune": (46.27, 18.36, 35.82, 49.25),
        "rehearsal_random": (71.30, 61.47, 29.13, 60.05),
        "rehearsal_herding": (71.49, 61.66, 28.62, 60.23),
        "audio_kd": (72.14, 63.03, 28.68, 61.08),
        "tok_kd": (71.79, 61.54, 28.82, 61.88),
        "seq_kd": (76.12, 68.94, 28.56, 61.50),
    },
    "slurp6": {
        "joint": (85.84, None, 20.46, 70.59),
        "finetune": (33.56, 12.42, 46.26, 37.88),
        "rehearsal_random": (66.11, 59.37, 34.77, 55.33),
        "rehearsal_herding": (67.55, 62.55, 33.82, 56.09),
        "audio_kd": (68.40, 62.83, 32.04, 58.15),
        "tok_kd": (68.36, 62.53, 32.47, 58.20),
        "seq_kd": (71.56, 64.82, 32.50, 58.29),
        "audio_seq_kd": (72.48, 65.25, 31.37, 60.00),
    },
}

Row = Mapping[str, Any]  # an aggregated table row: "n", "kind", "split", "per_seed", "avg_acc": (mean, std), ...


def _diff(rows: Mapping[str, Row], a: str, b: str, key: str = "avg_acc") -> Diff:
    from slukd.report.table import difference

    return difference(rows[a], rows[b], key)


def check_claims(rows: Mapping[str, Row], split: str) -> list[tuple[str, str]]:
    """The paper's claims, each as (claim, verdict with the differences, their 95% intervals and p-values), on
    ``rows`` (row name -> aggregate with per-seed values; Avg Acc unless stated).

    - fine-tuning forgets most: Last Acc of every other row of the paper's table (:data:`PAPER_SLU`, joint aside)
      − fine-tuning > 0 (the paper's claim is about its rows; the other methods meet fine-tuning in the cross table);
    - rehearsal recovers most: (A_herding − A_ft) − 0.5 (A_joint − A_ft) > 0, i.e. more than half of the gap to
      joint closed; per seed ``u = A_herding − 0.5 A_ft`` against ``0.5 A_joint`` (Welch);
    - herding ≥ random: herding − random > 0;
    - seq-KD adds most: seq-KD − audio-KD > 0 and seq-KD − tok-KD > 0 (same baseline, so the gains compare);
    - audio-KD and tok-KD add little: per seed ``(A_seq − A_herding) / 3 − (A_k − A_herding) > 0`` for both k;
    - SLURP-6: audio+seq-KD − every other paper row > 0;
    - 5% > 1% memory: rehearsal_5pct − rehearsal_random > 0."""
    from slukd.report.stats import paired, welch

    out: list[tuple[str, str]] = []
    continual = [n for n, r in rows.items() if n != "joint" and r.get("split") != "joint"]
    paper_rows = [n for n in PAPER_SLU.get(split, {}) if n != "joint"]  # the rows of the paper's table
    claim = "fine-tuning forgets most (lowest Last Acc of the paper's rows)"
    others = [n for n in continual if n != "finetune" and n in paper_rows]
    why = missing_rows(rows, "finetune", *others) if others else "not run (no paper row besides finetune)"
    out.append(
        (claim, why or verdict_all([(f"{o} − finetune", _diff(rows, o, "finetune", "last_acc")) for o in others]))
    )

    claim = "rehearsal recovers most of what fine-tuning loses (> 50% of the gap to joint)"
    why = missing_rows(rows, "finetune", "rehearsal_herding", "joint")
    if why is None:
        ft, reh = rows["finetune"]["per_seed"]["avg_acc"], rows["rehearsal_herding"]["per_seed"]["avg_acc"]
        joint = list(rows["joint"]["per_seed"]["avg_acc"].values())
        u = [reh[s] - 0.5 * ft[s] for s in sorted(set(ft) & set(reh), key=str)]
        d = welch(u, [0.5 * j for j in joint])
        frac = (rows["rehearsal_herding"]["avg_acc"][0] - rows["finetune"]["avg_acc"][0]) / max(
            rows["joint"]["avg_acc"][0] - rows["finetune"]["avg_acc"][0], 1e-9)  # fmt: skip
        v = verdict(d)
        why = f"{v}: {100 * frac:.0f}% of the gap closed; margin over half the gap {d.text()}"
    out.append((claim, why))

    claim = "herding ≥ random memory"
    why = missing_rows(rows, "rehearsal_herding", "rehearsal_random")
    out.append(
        (claim, why or verdict_all([("herding − random", _diff(rows, "rehearsal_herding", "rehearsal_random"))]))
    )

    claim = "seq-KD adds most on top of rehearsal (largest gain over rehearsal_herding)"
    why = missing_rows(rows, "seq_kd", "audio_kd", "tok_kd", "rehearsal_herding")
    out.append(
        (claim, why or verdict_all([(f"seq_kd − {k}", _diff(rows, "seq_kd", k)) for k in ("audio_kd", "tok_kd")]))
    )

    claim = "audio-KD and tok-KD add little (< 1/3 of seq-KD's gain)"
    if why is None:
        h, sq = rows["rehearsal_herding"]["per_seed"]["avg_acc"], rows["seq_kd"]["per_seed"]["avg_acc"]
        diffs = []
        for k in ("audio_kd", "tok_kd"):
            a = rows[k]["per_seed"]["avg_acc"]
            seeds = sorted(set(h) & set(sq) & set(a), key=str)
            w = {s: (sq[s] - h[s]) / 3 - (a[s] - h[s]) for s in seeds}
            diffs.append((f"seq_kd gain / 3 − {k} gain", paired(w, dict.fromkeys(seeds, 0.0))))
        why = verdict_all(diffs)
    out.append((claim, why))

    if split == "slurp6":
        claim = "audio+seq KD is the best of the paper's rows on SLURP-6"
        present = [n for n in paper_rows if n in rows and n != "audio_seq_kd"]
        why = missing_rows(rows, "audio_seq_kd", *present) if present else "not run (no paper row)"
        out.append(
            (claim, why or verdict_all([(f"audio_seq_kd − {o}", _diff(rows, "audio_seq_kd", o)) for o in present]))
        )

    claim = "5% memory > 1% memory (random exemplars)"
    why = missing_rows(rows, "rehearsal_5pct", "rehearsal_random")
    out.append((claim, why or verdict_all([("5% − 1%", _diff(rows, "rehearsal_5pct", "rehearsal_random"))])))
    return out


def _fmt(m: float | None) -> str:
    return "-" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.2f}"


def _by_name(agg_rows: Sequence[Row], split: str) -> dict[str, Row]:
    """Rows of ``split`` (and the joint row) by name; a name with several settings groups is marked ambiguous."""
    groups: dict[str, list[Row]] = {}
    for r in agg_rows:
        if r["kind"] == "continual" and r.get("split") in (None, split, "joint"):
            groups.setdefault(r["row"], []).append(r)
    out: dict[str, Row] = {}
    for name, rs in groups.items():
        out[name] = rs[0] if len(rs) == 1 else {**rs[0], "ambiguous": [r["label"] for r in rs]}
    return out


def format_paper_section(agg_rows: Sequence[Row], split: str) -> str:
    """Markdown: the runs' Avg/Last Acc, WERs, Avg SLU-F1 beside the paper's, then the claims with verdicts."""
    if split not in PAPER_SLU:
        raise ValueError(f"--paper must be one of {sorted(PAPER_SLU)}, got {split!r}")
    rows = _by_name(agg_rows, split)
    paper = PAPER_SLU[split]
    shown = [r for r in agg_rows if r["kind"] == "continual" and r.get("split") in (None, split, "joint")]
    lines = [f"### Beside the paper ({split.upper().replace('SLURP', 'SLURP-')}; paper: real SLURP, wav2vec2, "
             "1% memory = 70 recordings per scenario, a fixed quota)", "",
             "WER (full target): intent, slots and transcript against the gold target, the paper's WER; WER "
             "(transcript): the transcript part only, which the paper does not report.", "",
             "| method | runs | Avg Acc | paper | Last Acc | paper | Avg WER (full target) | paper | "
             "Avg WER (transcript) | SLU-F1 | paper | Optimiser steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in shown:
        p = paper.get(r["row"], (None, None, None, None))
        cells = []
        for k, pv in (("avg_acc", p[0]), ("last_acc", p[1]), ("avg_full_wer", p[2]), ("avg_wer", "-"),
                      ("avg_slu_f1", p[3]), ("optimizer_steps", "-")):  # fmt: skip
            m, sd = r.get(k, (float("nan"), float("nan")))
            d = 0 if k == "optimizer_steps" else 2
            cells.append(f"{m:.{d}f} ± {sd:.{d}f}" if r["n"] > 1 and not math.isnan(m) else
                         ("-" if math.isnan(m) else f"{m:.{d}f}"))  # fmt: skip
            if pv != "-":
                cells.append(_fmt(pv))
        lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's claims on these runs (Avg Acc unless stated; differences with their 95% interval and "
              "p-value, paired by seed between continual rows, Welch against the joint row; a claim holds only when "
              "its intervals exclude 0 on the claimed side):", ""]  # fmt: skip
    claims = check_claims(rows, split)
    answerable = [(c, v) for c, v in claims if not v.startswith("not run")]
    lines += [f"- {claim}: {verdict}" for claim, verdict in answerable]
    if len(answerable) < len(claims):
        lines += ["", f"({len(claims) - len(answerable)} of the paper's claims need rows not run here and are left "
                  "out.)"]  # fmt: skip
    if rows and min(r["n"] for r in rows.values()) < 2:
        lines += ["", "Some rows have a single seed: they have no interval, and no claim resting on them can be "
                  "shown; run more seeds."]  # fmt: skip
    return "\n".join(lines) + "\n"
