"""The captioning paper's findings checked on a table of runs (printed under every captioning table).

Xu et al. (Interspeech 2024) find that a small student distilled with sequence-level KD plus encoder-level KD is
competitive with its large teacher, that distilling into the encoder beats distilling into the decoder, that
contrastive encoder KD is more robust than MSE and better when captions are scarce, and that audio-only (caption-free)
clips help. Each finding is checked on CIDEr-D with :mod:`slukd.report.stats`:

- students are not paired with each other (each row trains its own student; Welch's interval);
- against the teacher: with one teacher run (every student learnt from that model) its score is a fixed value and
  the row gets the one-sample interval (:func:`slukd.report.stats.against_reference`); with several, Welch's;
- "competitive with the teacher" needs a margin, which the paper does not give: slukd reads it as *at least 95% of
  the teacher's CIDEr-D*, i.e. the interval of ``student − 0.95 · teacher`` lies above 0, and checks it on the row
  of the paper's full recipe (seq-KD + contrastive encoder KD + audio-only clips), named in advance rather than the
  best row picked after the runs.

A finding ``holds`` only when every interval it rests on lies on the claimed side of 0, ``does not hold`` when one
lies wholly on the other side, else ``not shown with n seeds``; a finding whose rows were not run is left out, and a
row name with several settings groups is reported as ambiguous, never picked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slukd.report.stats import Diff, against_reference, missing_rows, verdict_all, welch

__all__ = ["COMPETITIVE", "check_caption_claims", "format_caption_claims", "teacher_diff"]

#: the share of the teacher's CIDEr-D that "competitive with the teacher" means here (the paper gives no margin)
COMPETITIVE = 0.95
KEY = "CIDEr_D"

Row = Mapping[str, Any]


def _scores(row: Row) -> list[float]:
    return [float(v) for v in row["per_seed"].get(KEY, {}).values()]


def _d(rows: Mapping[str, Row], a: str, b: str) -> Diff:
    return welch(_scores(rows[a]), _scores(rows[b]))


def teacher_diff(student: Row, teacher: Row, share: float = 1.0) -> Diff:
    """``student − share · teacher`` on CIDEr-D: one-sample against a single teacher run (its score is a fixed
    value), Welch's interval against several."""
    t = _scores(teacher)
    if len(t) == 1:
        return against_reference(_scores(student), share * t[0])
    return welch(_scores(student), [share * x for x in t])


def _vs_teacher(rows: Mapping[str, Row], a: str, share: float) -> Diff:
    return teacher_diff(rows[a], rows["teacher"], share)


def _gains(rows: Mapping[str, Row], pairs: Sequence[tuple[str, str]]) -> str:
    why = missing_rows(rows, *{n for p in pairs for n in p})
    return why or verdict_all([(f"{a} − {b}", _d(rows, a, b)) for a, b in pairs])


def check_caption_claims(rows: Mapping[str, Row]) -> list[tuple[str, str]]:
    """The paper's findings as (finding, verdict with the differences, their 95% intervals and p-values) on ``rows``
    (row name -> aggregated captioning row with per-seed CIDEr-D in percent)."""
    out: list[tuple[str, str]] = []
    full = "student_seqkd_contrastive_audio"  # the paper's full recipe, fixed before any run (no pick of the best)
    claim = f"the full recipe's student is competitive with the teacher (≥ {100 * COMPETITIVE:.0f}% of its CIDEr-D)"
    why = missing_rows(rows, "teacher", full)
    if why is None:
        why = verdict_all([(f"{full} − {100 * COMPETITIVE:.0f}% of teacher", _vs_teacher(rows, full, COMPETITIVE))])
        why += f"; against the whole teacher: {_vs_teacher(rows, full, 1.0).text()}"
    out.append((claim, why))

    out.append(("KD beats supervised training (all captions)",
                _gains(rows, [("student_seqkd", "student_supervised")])))  # fmt: skip
    out.append(("KD beats supervised training (20% of the captions)",
                _gains(rows, [("student_scarce_seqkd_mse", "student_scarce_supervised"),
                              ("student_scarce_seqkd_contrastive", "student_scarce_supervised")])))  # fmt: skip
    out.append(("encoder KD beats decoder (token) KD, on top of seq-KD",
                _gains(rows, [("student_seqkd_mse", "student_seqkd_tokkd"),
                              ("student_seqkd_contrastive", "student_seqkd_tokkd")])))  # fmt: skip
    out.append(
        (
            "encoder KD beats decoder (token) KD, each term alone",
            _gains(rows, [("student_mse", "student_tokkd"), ("student_contrastive", "student_tokkd")]),
        )
    )
    out.append(
        (
            "contrastive beats MSE encoder KD (all captions)",
            _gains(rows, [("student_seqkd_contrastive", "student_seqkd_mse")]),
        )
    )
    out.append(
        (
            "contrastive beats MSE encoder KD when captions are scarce (20%)",
            _gains(rows, [("student_scarce_seqkd_contrastive", "student_scarce_seqkd_mse")]),
        )
    )
    out.append(
        (
            "audio-only clips help (all captions, contrastive)",
            _gains(rows, [("student_seqkd_contrastive_audio", "student_seqkd_contrastive")]),
        )
    )
    for pool, what in (("pool", "strict pool: clips the teacher never saw captions of"),
                       ("remainder", "the uncaptioned 80%, whose captions the teacher saw")):  # fmt: skip
        pairs = [(f"student_scarce_seqkd_{m}_{pool}", f"student_scarce_seqkd_{m}") for m in ("mse", "contrastive")]
        out.append((f"audio-only clips help (20% of the captions; {what})", _gains(rows, pairs)))
    return out


def _by_name(agg_rows: Sequence[Row]) -> dict[str, Row]:
    groups: dict[str, list[Row]] = {}
    for r in agg_rows:
        if r["kind"] == "captioning":
            groups.setdefault(r["row"], []).append(r)
    return {n: rs[0] if len(rs) == 1 else {**rs[0], "ambiguous": [r["label"] for r in rs]} for n, rs in groups.items()}


def format_caption_claims(agg_rows: Sequence[Row]) -> list[str]:
    """Markdown lines: the findings that the runs can answer, with their verdicts (empty when none can)."""
    claims = [(c, v) for c, v in check_caption_claims(_by_name(agg_rows)) if not v.startswith("not run")]
    if not claims:
        return []
    out = ["The paper's findings on these runs (CIDEr-D; differences with their 95% interval and p-value, Welch "
           "between students, one-sample against a single teacher run; a finding holds only when its intervals "
           f"exclude 0 on the claimed side; \"competitive\" = at least {100 * COMPETITIVE:.0f}% of the teacher's "
           "CIDEr-D, slukd's reading: the paper gives no margin):", ""]  # fmt: skip
    out += [f"- {c}: {v}" for c, v in claims]
    return [*out, ""]
