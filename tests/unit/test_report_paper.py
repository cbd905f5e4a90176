"""The paper's claims checked on a table of runs (slukd.report.paper): each verdict can come out either way."""

import math

import pytest

from slukd.report.paper import check_claims, format_paper_section

KEYS = ("avg_acc", "last_acc", "avg_wer", "avg_slu_f1")


def _row(name, avg, std=1.0, last=None, n=3):
    r = {"row": name, "label": name, "kind": "continual", "n": n}
    for k in KEYS:
        r[k] = (float("nan"), float("nan"))
    r["avg_acc"] = (avg, std)
    r["last_acc"] = (avg - 20 if last is None else last, std)
    return r


def _table(**avg):
    return {k: _row(k, *v) if isinstance(v, tuple) else _row(k, v) for k, v in avg.items()}


def _verdicts(rows, split="slurp3"):
    return {claim.split(" (")[0]: v for claim, v in check_claims(rows, split)}


def test_paper_shaped_table_holds_every_claim():
    rows = _table(
        joint=90.0,
        finetune=(45.0, 1.0, 15.0),
        rehearsal_random=70.0,
        rehearsal_herding=72.0,
        rehearsal_5pct=80.0,
        audio_kd=72.5,
        tok_kd=72.3,
        seq_kd=78.0,
        audio_seq_kd=80.0,
    )
    v = _verdicts(rows, "slurp6")
    assert all(x.startswith("holds") for x in v.values()), v


def test_verdicts_turn_when_the_numbers_turn():
    rows = _table(
        joint=90.0,
        finetune=(45.0, 1.0, 60.0),
        rehearsal_random=75.0,
        rehearsal_herding=50.0,
        rehearsal_5pct=60.0,
        audio_kd=60.0,
        tok_kd=49.0,
        seq_kd=51.0,
        audio_seq_kd=52.0,
    )
    v = _verdicts(rows, "slurp6")
    assert v["fine-tuning forgets most"].startswith("does not hold")
    assert v["rehearsal recovers most of what fine-tuning loses"].startswith("does not hold")
    assert v["herding ≥ random memory"].startswith("does not hold")
    assert v["seq-KD adds most on top of rehearsal"].startswith("does not hold")
    assert v["audio-KD and tok-KD add little"].startswith("does not hold")
    assert v["audio+seq KD is the best of the paper's rows on SLURP-6"].startswith("does not hold")
    assert v["5% memory > 1% memory"].startswith("does not hold")


def test_differences_inside_the_spread_are_not_ranked():
    rows = _table(rehearsal_random=(70.0, 3.0), rehearsal_herding=(71.0, 3.0), rehearsal_5pct=(69.0, 0.5))
    v = _verdicts(rows)
    assert v["herding ≥ random memory"].startswith("within spread")
    assert v["5% memory > 1% memory"].startswith("within spread")
    assert v["seq-KD adds most on top of rehearsal"].startswith("not run")


def test_section_has_paper_numbers_and_flags_single_seeds():
    rows = [_row("finetune", 50.0, 0.0, n=1), _row("seq_kd", 60.0, 0.0, n=1)]
    md = format_paper_section(rows, "slurp3")
    assert "| finetune | 1 | 50.00 | 46.27 |" in md and "| seq_kd | 1 | 60.00 | 76.12 |" in md
    assert "single seed" in md
    assert math.isnan(rows[0]["avg_wer"][0])
    with pytest.raises(ValueError, match="slurp3"):
        format_paper_section(rows, "slurp9")
