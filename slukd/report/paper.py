"""The SLU paper's table and claims beside a table of runs (``slukd report PATH... --paper slurp3|slurp6``).

The reference numbers are Cappellazzo et al. (Interspeech 2023), real SLURP with a fine-tuned wav2vec2 encoder and
1% memory (70 recordings per scenario). A table of runs is compared with them row by row, and each of the paper's
claims is checked on the runs' Avg Acc (mean over seeds) with one of three verdicts:

- ``holds`` / ``does not hold``: the difference the claim is about exceeds the larger sample std of the rows;
- ``within spread``: it does not, so the runs cannot rank the rows (said instead of a verdict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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

Row = Mapping[str, Any]  # an aggregated table row: "n", "avg_acc": (mean, std), ...


def _ms(rows: Mapping[str, Row], name: str, key: str = "avg_acc") -> tuple[float, float] | None:
    r = rows.get(name)
    if r is None or math.isnan(r[key][0]):
        return None
    return r[key]


def _gain(rows: Mapping[str, Row], row: str, base: str) -> tuple[float, float] | None:
    a, b = _ms(rows, row), _ms(rows, base)
    if a is None or b is None:
        return None
    return a[0] - b[0], max(a[1], b[1])


def _compare(rows: Mapping[str, Row], a: str, b: str, what: str) -> str:
    """Verdict on 'mean(a) > mean(b)' for Avg Acc, with the numbers."""
    g = _gain(rows, a, b)
    if g is None:
        return f"not run ({a if _ms(rows, a) is None else b} has no finished runs)"
    (diff, spread), ma, mb = g, _ms(rows, a), _ms(rows, b)
    nums = f"{a} {ma[0]:.2f} ± {ma[1]:.2f} vs {b} {mb[0]:.2f} ± {mb[1]:.2f}"  # type: ignore[index]
    if abs(diff) <= spread:
        return f"within spread: {nums} (difference {diff:+.2f} ≤ std {spread:.2f}); {what} cannot be ranked here"
    return f"{'holds' if diff > 0 else 'does not hold'}: {nums} ({diff:+.2f})"


def _extreme(rows: Mapping[str, Row], target: str, others: Sequence[str], key: str, lowest: bool) -> str:
    mt = _ms(rows, target, key)
    present = [o for o in others if o != target and _ms(rows, o, key) is not None]
    if mt is None or not present:
        return f"not run ({target} or its comparison rows have no finished runs)"
    sign = 1 if lowest else -1
    nearest = min(present, key=lambda o: sign * _ms(rows, o, key)[0])  # type: ignore[index]
    mo = _ms(rows, nearest, key)
    assert mo is not None
    gap = sign * (mo[0] - mt[0])
    spread = max(mt[1], mo[1])
    word = "lowest" if lowest else "highest"
    nums = f"{target} {mt[0]:.2f} ± {mt[1]:.2f}; next: {nearest} {mo[0]:.2f} ± {mo[1]:.2f}"
    if abs(gap) <= spread:
        return f"within spread: {nums} (gap {gap:.2f} ≤ std {spread:.2f})"
    return f"{'holds' if gap > 0 else 'does not hold'} ({target} {'is' if gap > 0 else 'is not'} the {word}): {nums}"


def check_claims(rows: Mapping[str, Row], split: str) -> list[tuple[str, str]]:
    """The paper's claims, each as (claim, verdict with numbers), on Avg Acc of ``rows`` (row name -> aggregate).

    "Recovers most": rehearsal closes more than half of the gap between fine-tuning and joint,
    (A_reh - A_ft) / (A_joint - A_ft) > 0.5 (paper: 0.64 on SLURP-3). "Adds little": a KD row's gain over the
    herding baseline is below a third of seq-KD's gain (paper SLURP-3: +0.65 and +0.30 vs +4.63)."""
    paper_rows = ["finetune", "rehearsal_random", "rehearsal_herding", "audio_kd", "tok_kd", "seq_kd"]
    continual = [n for n in rows if n != "joint"]
    out: list[tuple[str, str]] = []
    out.append(("fine-tuning forgets most (lowest Last Acc)", _extreme(rows, "finetune", continual, "last_acc", True)))
    ft, reh, joint = _ms(rows, "finetune"), _ms(rows, "rehearsal_herding"), _ms(rows, "joint")
    if ft is None or reh is None or joint is None:
        verdict = "not run (finetune, rehearsal_herding or joint has no finished runs)"
    else:
        frac = (reh[0] - ft[0]) / max(joint[0] - ft[0], 1e-9)
        spread = max(ft[1], reh[1])
        nums = (f"rehearsal_herding {reh[0]:.2f} ± {reh[1]:.2f}, finetune {ft[0]:.2f} ± {ft[1]:.2f}, joint "
                f"{joint[0]:.2f}: {100 * frac:.0f}% of the gap closed")  # fmt: skip
        if reh[0] - ft[0] <= spread:
            verdict = f"does not hold: {nums} (rehearsal's gain is within the spread {spread:.2f})"
        else:
            verdict = f"{'holds' if frac > 0.5 else 'does not hold'}: {nums}"
    out.append(("rehearsal recovers most of what fine-tuning loses (> 50% of the gap to joint)", verdict))
    herding = _compare(rows, "rehearsal_herding", "rehearsal_random", "herding vs random")
    out.append(("herding ≥ random memory", herding))
    gains = {k: _gain(rows, k, "rehearsal_herding") for k in ("audio_kd", "tok_kd", "seq_kd")}
    if any(g is None for g in gains.values()):
        verdict = "not run (audio_kd, tok_kd, seq_kd or rehearsal_herding has no finished runs)"
        little = verdict
    else:
        text = ", ".join(f"{k} {g[0]:+.2f} (std {g[1]:.2f})" for k, g in gains.items())  # type: ignore[index]
        best = max(gains, key=lambda k: gains[k][0])  # type: ignore[index]
        others = [k for k in gains if k != best]
        margin = min(gains[best][0] - gains[k][0] for k in others)  # type: ignore[index]
        spread = max(g[1] for g in gains.values())  # type: ignore[index]
        if margin <= spread:
            verdict = f"within spread: gains over rehearsal_herding {text}; the largest ({best}) leads by {margin:.2f}"
        else:
            verdict = f"{'holds' if best == 'seq_kd' else 'does not hold'}: gains over rehearsal_herding {text}"
        sg = gains["seq_kd"][0]  # type: ignore[index]
        small = [k for k in ("audio_kd", "tok_kd") if gains[k][0] < sg / 3]  # type: ignore[index]
        little = (f"{'holds' if len(small) == 2 and sg > 0 else 'does not hold'}: gains {text} "
                  f"(a third of seq-KD's gain is {sg / 3:+.2f})")  # fmt: skip
    out.append(("seq-KD adds most on top of rehearsal (largest gain over rehearsal_herding)", verdict))
    out.append(("audio-KD and tok-KD add little (< 1/3 of seq-KD's gain)", little))
    if split == "slurp6":
        cands = paper_rows + ["audio_seq_kd"]
        out.append(("audio+seq KD is the best of the paper's rows on SLURP-6",
                    _extreme(rows, "audio_seq_kd", cands, "avg_acc", False)))  # fmt: skip
    out.append(("5% memory > 1% memory (random exemplars)", _compare(rows, "rehearsal_5pct", "rehearsal_random",
                                                                     "5% vs 1%")))  # fmt: skip
    return out


def _fmt(m: float | None) -> str:
    return "-" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.2f}"


def format_paper_section(agg_rows: Sequence[Row], split: str) -> str:
    """Markdown: the runs' Avg/Last Acc, Avg WER, Avg SLU-F1 beside the paper's, then the claims with verdicts."""
    if split not in PAPER_SLU:
        raise ValueError(f"--paper must be one of {sorted(PAPER_SLU)}, got {split!r}")
    rows = {r["row"]: r for r in agg_rows if r["kind"] == "continual"}
    paper = PAPER_SLU[split]
    keys = ("avg_acc", "last_acc", "avg_wer", "avg_slu_f1")
    lines = [f"### Beside the paper ({split.upper().replace('SLURP', 'SLURP-')}; paper: real SLURP, wav2vec2, "
             "1% = 70 recordings per scenario)", "",
             "| method | runs | Avg Acc | paper | Last Acc | paper | Avg WER | paper | SLU-F1 | paper |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        p = paper.get(name, (None, None, None, None))
        cells = []
        for k, pv in zip(keys, p):
            m, sd = r[k]
            cells += [f"{m:.2f} ± {sd:.2f}" if r["n"] > 1 and not math.isnan(m) else _fmt(m), _fmt(pv)]
        lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's claims on these runs (Avg Acc unless stated; 'within spread' = the difference is not "
              "larger than the larger per-seed std, so the rows are not ranked):", ""]  # fmt: skip
    lines += [f"- {claim}: {verdict}" for claim, verdict in check_claims(rows, split)]
    if rows and min(r["n"] for r in rows.values()) < 2:
        lines += ["", "Some rows have a single seed: their std is 0 and says nothing about the spread; run more seeds "
                  "before reading a verdict."]  # fmt: skip
    return "\n".join(lines) + "\n"
