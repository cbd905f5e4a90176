"""Per-step SLU scores: transcript WER and full-target WER side by side (hand-computed)."""

from __future__ import annotations

import pytest

from slukd.slu.evaluate import predictions, score_step


def _row(i: str, scenario: str, action: str, transcript: str, entities: list[dict]) -> dict:
    from slukd.data.target import serialise

    return {"ID": i, "wav": f"audio-{i}.flac", "scenario": scenario, "action": action, "transcript": transcript,
            "entities": entities, "target": serialise(scenario, action, entities, transcript)}  # fmt: skip


def test_full_target_wer_counts_intent_and_slot_tokens():
    rows = [
        _row("1", "email", "sendemail", "reply to charlotte", [{"type": "person", "filler": "charlotte"}]),
        _row("2", "alarm", "set", "wake me up", []),
    ]
    # gold targets: "email_sendemail _SEP person _FILL charlotte _SEP reply to charlotte" (9 words)
    #               "alarm_set _SEP wake me up" (5 words)
    hyps = {
        "1": "email_query _SEP person _FILL charlotte _SEP reply to charlotte",  # intent wrong: 1 substitution
        "2": "alarm_set _SEP wake me",  # transcript misses "up": 1 deletion
    }
    scores = score_step(rows, predictions(rows, hyps), lambda s: 0, 0)
    seen = scores["seen"]
    assert seen["full_wer"] == pytest.approx(2 / 14)  # (1 + 1) / (9 + 5)
    assert seen["wer"] == pytest.approx(1 / 6)  # transcripts: 0 + 1 errors over 3 + 3 words
    assert seen["intent_acc"] == pytest.approx(0.5)
    # a missing prediction counts every gold word as deleted in both WERs
    scores = score_step(rows, predictions(rows, {"1": hyps["1"]}), lambda s: 0, 0)
    assert scores["seen"]["full_wer"] == pytest.approx((1 + 5) / 14)
