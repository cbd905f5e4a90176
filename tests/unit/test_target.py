"""slukd.data.target: serialise/parse round trip, malformed output, inventory."""

from __future__ import annotations

import json

import pytest

from slukd.data.target import (
    SLURP_ENTITY_TYPES,
    SLURP_INTENTS,
    SLURP_SCENARIO_ACTIONS,
    SLURP_SCENARIOS,
    ParseStats,
    parse,
    serialise,
    special_tokens,
    split_intent,
)


def test_paper_format():
    t = serialise("email", "sendemail", [{"type": "person", "filler": "charlotte"}], "reply email to charlotte")
    assert t == "email_sendemail _SEP person _FILL charlotte _SEP reply email to charlotte"
    assert serialise("weather", "query", [], "is it sunny") == "weather_query _SEP is it sunny"


def test_multi_entity_round_trip_and_action_with_underscore():
    ents = [
        {"type": "house_place", "filler": "living room"},
        {"type": "time", "filler": "six pm"},
        {"type": "time", "filler": "seven pm"},
    ]
    t = serialise("iot", "hue_lightoff", ents, "lights off in the living room from six pm to seven pm")
    p = parse(t)
    assert p.ok and p.scenario == "iot" and p.action == "hue_lightoff" and p.intent == "iot_hue_lightoff"
    assert p.entities == ents
    assert p.transcript == "lights off in the living room from six pm to seven pm"


def test_whitespace_insensitive_and_empty_parts():
    p = parse("  calendar_set   _SEP date _FILL   next  monday _SEP  add  it ")
    assert p.ok and p.entities == [{"type": "date", "filler": "next monday"}] and p.transcript == "add it"
    t = serialise("general", "quirky", [{"type": "person", "filler": ""}], "")
    p = parse(t)
    assert p.ok and p.entities == [{"type": "person", "filler": ""}] and p.transcript == ""


@pytest.mark.parametrize(
    "text,intent,entities,transcript,problem",
    [
        ("", "", [], "", "empty"),
        ("calendar_set", "calendar_set", [], "", "no_sep"),
        ("calendar_set add a meeting", "calendar_set", [], "add a meeting", "no_sep"),
        ("calendar_set _SEP date tomorrow _SEP add it", "calendar_set", [], "add it", "entity_no_fill"),
        ("calendar_set _SEP _FILL tomorrow _SEP add it", "calendar_set", [], "add it", "entity_no_type"),
        ("calendar _SEP add it", "calendar", [], "add it", "intent_no_action"),
        ("_SEP _SEP", "", [], "", "no_intent"),
        ("qa_maths _SEP what _FILL is", "qa_maths", [], "what is", "fill_in_transcript"),
    ],
)
def test_malformed_never_raises_and_counts(text, intent, entities, transcript, problem):
    stats = ParseStats()
    p = parse(text, stats)
    assert not p.ok and problem in p.problems
    assert p.intent == intent and p.entities == entities and p.transcript == transcript
    assert stats.total == 1 and stats.failed == 1 and stats.problems[problem] == 1


def test_parse_stats_counts_ok_and_failures():
    stats = ParseStats()
    for t in ["a_b _SEP x", "nonsense", "a_b _SEP t _FILL v _SEP x", None]:
        parse(t, stats)  # type: ignore[arg-type]
    assert stats.as_dict()["total"] == 4 and stats.failed == 2


def test_serialise_rejects_bad_fields():
    with pytest.raises(ValueError, match="scenario"):
        serialise("hue_x", "on", [], "x")
    with pytest.raises(ValueError, match="separator"):
        serialise("qa", "maths", [], "what _SEP is")
    with pytest.raises(ValueError, match="entity 0"):
        serialise("qa", "maths", [{"filler": "x"}], "x")


def test_inventory_and_special_tokens():
    assert len(SLURP_SCENARIOS) == 18 and len(SLURP_INTENTS) == 60 and len(SLURP_ENTITY_TYPES) == 55
    assert all("_" not in s for s in SLURP_SCENARIOS)
    assert split_intent("iot_hue_lightoff") == ("iot", "hue_lightoff")
    assert sum(len(a) for a in SLURP_SCENARIO_ACTIONS.values()) == 60
    toks = special_tokens(["a_b", "a_b", "c_d"], ["date"])
    assert toks == ["_SEP", "_FILL", "a_b", "c_d", "date"]


def _gold(d: dict) -> tuple[str, str, list[dict], str]:
    surf = [t["surface"] for t in d["tokens"]]
    ents = sorted(d["entities"], key=lambda e: min(e["span"]))
    fills = [{"type": e["type"], "filler": " ".join(surf[i].lower() for i in e["span"])} for e in ents]
    return d["scenario"], d["action"], fills, " ".join(d["sentence"].lower().split())


def test_round_trip_every_real_slurp_sentence(shared_slurp):
    """Every devel/test sentence (multi-entity ones included) survives serialise -> parse exactly; the
    inventory covers every label there."""
    n = multi = 0
    for split in ("devel", "test"):
        with open(shared_slurp / f"{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                scenario, action, ents, transcript = _gold(d)
                assert f"{scenario}_{action}" in SLURP_INTENTS
                assert all(e["type"] in SLURP_ENTITY_TYPES for e in ents)
                p = parse(serialise(scenario, action, ents, transcript))
                assert p.ok, d["slurp_id"]
                assert (p.scenario, p.action, p.entities, p.transcript) == (scenario, action, ents, transcript)
                n += 1
                multi += len(ents) >= 2
    assert n == 2033 + 2974 and multi > 500
