"""SLURP scorer: hand-computed cases, a naive second implementation, the published prediction files, bad input, CLI."""

from __future__ import annotations

import copy
import functools
import json
import random
from pathlib import Path

import pytest

from slukd.metrics.slurp_scorer import (
    SlurpFormatError,
    char_distance,
    cli_main,
    levenshtein,
    levenshtein_py,
    load_gold,
    load_predictions,
    score_slurp,
    word_distance,
)


def _ent(t: str, f: str) -> dict:
    return {"type": t, "filler": f}


def _item(key: str, scen: str, act: str, ents: list[dict]) -> dict:
    return {"key": key, "scenario": scen, "action": act, "entities": ents}


GOLD = [
    _item("a", "alarm", "set", [_ent("time", "five am"), _ent("date", "monday")]),
    _item("b", "weather", "query", [_ent("place", "london")]),
    _item("c", "music", "play", [_ent("artist", "abba")]),
]
PRED = [
    _item("a", "alarm", "query", [_ent("time", "five pm"), _ent("place", "home")]),
    _item("b", "weather", "query", [_ent("place", "london")]),
    _item("zzz", "x", "y", []),  # not in gold: ignored
]


# ---------------------------------------------------------------------------------------------------- hand-computed


def test_hand_computed_micro():
    s = score_slurp(GOLD, PRED)
    d = s.to_dict()
    assert (d["n_gold"], d["n_scored"], d["n_missing"], d["n_extra"], d["n_pred"]) == (3, 2, 1, 1, 3)
    assert s.missing_keys == ["c"]
    assert d["scenario_acc"] == pytest.approx(1.0)
    assert d["action_acc"] == pytest.approx(0.5) and d["intent_acc"] == pytest.approx(0.5)
    assert d["intent_f1"] == pytest.approx(0.5)  # micro: P = R = F1 = accuracy
    # exact: TP 1 (london), FP 2 (five pm, home), FN 2 (five am, monday)
    assert (d["span_p"], d["span_r"], d["span_f1"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # word: five pm ~ five am d=1/2 -> TP 1, FP .5, FN .5; home FP 1; monday FN 1; london TP 1 -> 2 / 3.5
    assert d["word_f1"] == pytest.approx(2 / 3.5)
    # char: d = 1/7 -> TP 2, FP = FN = 1 + 1/7
    assert d["char_p"] == pytest.approx(2 / (3 + 1 / 7)) and d["char_f1"] == pytest.approx(14 / 22)
    # SLU-F1: sums of the two runs: TP 4, FP = FN = 1.5 + 8/7
    assert (d["slu_p"], d["slu_r"], d["slu_f1"]) == pytest.approx((56 / 93, 56 / 93, 56 / 93))
    assert s.overall["slu"].tp == pytest.approx(4.0) and s.overall["slu"].fp == pytest.approx(1.5 + 8 / 7)


def test_missing_counted_as_errors():
    d = score_slurp(GOLD, PRED, missing="error").to_dict()
    assert d["n_scored"] == 3 and d["n_missing"] == 1
    assert d["scenario_acc"] == pytest.approx(2 / 3) and d["scenario_f1"] == pytest.approx(2 / 3)
    assert (d["span_p"], d["span_r"]) == pytest.approx((1 / 3, 1 / 4))  # abba becomes one more FN


def test_distance_ties_take_first_remaining_gold_and_order_matters():
    gold = [_item("k", "s", "a", [_ent("person", "ann"), _ent("person", "bob")])]
    pred = [_item("k", "s", "a", [_ent("person", "cob"), _ent("person", "ann")])]
    s = score_slurp(gold, pred, per_label=True)
    # word: "cob" ties at d=1 with ann and bob -> takes ann; then "ann" vs bob d=1 -> TP 2, FP 2, FN 2
    w = s.per_label["word"]["person"]
    assert (w.tp, w.fp, w.fn) == pytest.approx((2.0, 2.0, 2.0))
    # char: "cob" is closer to bob (1/3); "ann" matches ann (0) -> TP 2, FP = FN = 1/3
    c = s.per_label["char"]["person"]
    assert (c.tp, c.fp, c.fn) == pytest.approx((2.0, 1 / 3, 1 / 3))
    # exact: cob FP, ann TP, bob FN
    e = s.per_label["span"]["person"]
    assert (e.tp, e.fp, e.fn) == (1.0, 1.0, 1.0)


def test_exact_duplicates_and_word_distance_above_one():
    gold = [_item("k", "s", "a", [_ent("t", "x")])]
    pred = [_item("k", "s", "a", [_ent("t", "x"), _ent("t", "x")])]
    e = score_slurp(gold, pred).overall["span"]
    assert (e.tp, e.fp, e.fn) == (1.0, 1.0, 0.0)
    assert word_distance("a", "b c d") == pytest.approx(3.0)
    w = score_slurp(gold, [_item("k", "s", "a", [_ent("t", "b c d")])]).overall["word"]
    assert (w.tp, w.fp, w.fn) == pytest.approx((1.0, 3.0, 3.0))
    assert char_distance("", "") == 0.0 and char_distance("ab", "") == 1.0
    assert word_distance("New York", "new york") == pytest.approx(1.0)  # case sensitive


def test_macro_average_and_per_label():
    gold = [_item("1", "a", "x", []), _item("2", "a", "x", []), _item("3", "b", "x", [])]
    pred = [_item("1", "a", "x", []), _item("2", "b", "x", []), _item("3", "b", "x", [])]
    s = score_slurp(gold, pred, average="macro", per_label=True)
    # scenario a: TP1 FN1 -> P 1, R .5, F 2/3; b: TP1 FP1 -> P .5, R 1, F 2/3
    sc = s.overall["scenario"]
    assert (sc.precision, sc.recall, sc.f1) == pytest.approx((0.75, 0.75, 2 / 3))
    assert s.scenario_acc == pytest.approx(2 / 3)
    assert s.per_label["scenario"]["a"].recall == pytest.approx(0.5)
    assert s.to_dict(per_label=True)["per_label"]["scenario"]["b"]["fp"] == 1.0
    assert s.to_dict()["average"] == "macro" and "per_label" not in s.to_dict()


def test_empty_inputs_give_zeros_not_errors():
    d = score_slurp([], []).to_dict()
    assert d["slu_f1"] == 0.0 and d["n_gold"] == 0
    d = score_slurp(GOLD[:1], []).to_dict()
    assert d["n_missing"] == 1 and d["intent_acc"] == 0.0


def test_duplicate_prediction_keys_last_wins():
    pred = [_item("b", "x", "y", []), _item("b", "weather", "query", [_ent("place", "london")])]
    d = score_slurp(GOLD[1:2], pred).to_dict()
    assert d["n_duplicates"] == 1 and d["intent_acc"] == 1.0 and d["span_f1"] == 1.0


# ---------------------------------------------------------------------------------------------------- naive reference


def _lev_naive(a, b) -> int:
    """Textbook recursion with memo (independent of both implementations in the module)."""

    @functools.cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def naive_official(gold_items: list[dict], pred_items: list[dict]) -> dict[str, float]:
    """A second, deliberately plain implementation of the spec (dict entities, deepcopy, popping keys)."""
    gold = {g["key"]: g for g in gold_items}
    pred = {}
    for p in pred_items:
        pred[p["key"]] = p
    cnt = {m: {"tp": {}, "fp": {}, "fn": {}} for m in ("scenario", "action", "intent", "span", "word", "char")}

    def add(m, kind, label, v=1.0):
        cnt[m][kind][label] = cnt[m][kind].get(label, 0.0) + v

    for key in list(gold):
        if key not in pred:
            continue
        g, p = gold.pop(key), pred.pop(key)
        for m, gl, pl in (
            ("scenario", g["scenario"], p["scenario"]),
            ("action", g["action"], p["action"]),
            ("intent", g["scenario"] + "_" + g["action"], p["scenario"] + "_" + p["action"]),
        ):
            if gl == pl:
                add(m, "tp", pl)
            else:
                add(m, "fp", pl)
                add(m, "fn", gl)
        left = copy.deepcopy(g["entities"])
        for e in p["entities"]:
            if e in left:
                add("span", "tp", e["type"])
                left.remove(e)
            else:
                add("span", "fp", e["type"])
        for e in left:
            add("span", "fn", e["type"])
        for m in ("word", "char"):
            left = copy.deepcopy(g["entities"])
            for e in p["entities"]:
                cands = [x for x in left if x["type"] == e["type"]]
                if not cands:
                    add(m, "fp", e["type"])
                    continue
                if m == "word":
                    ds = [_lev_naive(tuple(x["filler"].split()), tuple(e["filler"].split())) / len(x["filler"].split())
                          for x in cands]  # fmt: skip
                else:
                    ds = [_lev_naive(x["filler"], e["filler"]) / max(len(x["filler"]), len(e["filler"])) for x in cands]
                best = ds.index(min(ds))
                add(m, "tp", e["type"])
                add(m, "fp", e["type"], ds[best])
                add(m, "fn", e["type"], ds[best])
                left.remove(cands[best])
            for e in left:
                add(m, "fn", e["type"])

    def prf(tp, fp, fn):
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    out = {}
    for m, c in cnt.items():
        out[m] = prf(*(sum(c[k].values()) for k in ("tp", "fp", "fn")))
    out["slu"] = prf(*(sum(cnt["word"][k].values()) + sum(cnt["char"][k].values()) for k in ("tp", "fp", "fn")))
    return out


def _compare(ours, ref):
    for m, (p, r, f) in ref.items():
        o = ours.overall[m]
        assert (o.precision, o.recall, o.f1) == pytest.approx((p, r, f), abs=1e-9), m


def test_against_naive_implementation_on_random_data():
    rng = random.Random(0)
    types = ["time", "date", "person", "place"]
    words = ["five", "am", "pm", "ann", "bob", "new", "york", "x", "jessica", "'s"]

    def ents(n):
        return [_ent(rng.choice(types), " ".join(rng.choices(words, k=rng.randint(1, 3)))) for _ in range(n)]

    gold = [_item(str(i), rng.choice("ab"), rng.choice("xyz"), ents(rng.randint(0, 4))) for i in range(300)]
    pred = []
    for g in gold:
        if rng.random() < 0.1:
            continue  # missing
        e = copy.deepcopy(g["entities"]) if rng.random() < 0.4 else ents(rng.randint(0, 4))
        rng.shuffle(e)
        pred.append(_item(g["key"], rng.choice("ab"), rng.choice("xyz"), e))
    _compare(score_slurp(gold, pred), naive_official(gold, pred))


def test_levenshtein_implementations_agree():
    rng = random.Random(1)
    for _ in range(200):
        a = "".join(rng.choices("abc ", k=rng.randint(0, 8)))
        b = "".join(rng.choices("abc ", k=rng.randint(0, 8)))
        assert levenshtein(a, b) == levenshtein_py(a, b) == _lev_naive(a, b)
        assert levenshtein(a.split(), b.split()) == levenshtein_py(a.split(), b.split())


# ---------------------------------------------------------------------------------------------------- published files

# (gold-transcript keyed?, items scored, gold items not predicted, figures) — computed by this scorer, cross-checked
# with naive_official (test below; all files with --runslow) and against the SLURP paper (multi_hermit: intent
# 76.68, SLU-F1 69.53; multi_slurp_hermit: intent 78.33; gold_hermit: intent 84.84, span-F1 78.19).
EXPECTED = {
    "gold_hermit_predictions.jsonl": (
        True,
        2974,
        0,
        {
            "scenario_acc": 0.9014794889,
            "action_acc": 0.8698722260,
            "intent_acc": 0.8483523874,
            "span_p": 0.7925764192,
            "span_r": 0.7715196599,
            "span_f1": 0.7819063005,
            "word_f1": 0.8108844071,
            "char_f1": 0.8167766282,
            "slu_p": 0.8244770282,
            "slu_r": 0.8034346702,
            "slu_f1": 0.8138198526,
        },
    ),  # noqa: E501
    "gold_sfid_predictions.jsonl": (
        True,
        2974,
        0,
        {
            "scenario_acc": 0.8648285138,
            "action_acc": 0.8369199731,
            "intent_acc": 0.8224613315,
            "span_p": 0.7291987673,
            "span_r": 0.6705632306,
            "span_f1": 0.6986528880,
            "word_f1": 0.7353293239,
            "char_f1": 0.7566927370,
            "slu_p": 0.7761072931,
            "slu_r": 0.7178783811,
            "slu_f1": 0.7458580852,
        },
    ),  # noqa: E501
    "google_hermit_predictions.jsonl": (
        False,
        12393,
        685,
        {
            "scenario_acc": 0.8167513919,
            "action_acc": 0.7658355523,
            "intent_acc": 0.7341241023,
            "span_p": 0.5899045020,
            "span_r": 0.5703983818,
            "span_f1": 0.5799874810,
            "word_f1": 0.6401236127,
            "char_f1": 0.6811726857,
            "slu_p": 0.6701461809,
            "slu_r": 0.6501768621,
            "slu_f1": 0.6600105078,
        },
    ),  # noqa: E501
    "google_sfid_predictions.jsonl": (
        False,
        12393,
        685,
        {
            "scenario_acc": 0.7886710240,
            "action_acc": 0.7430807714,
            "intent_acc": 0.7206487533,
            "span_p": 0.6399599956,
            "span_r": 0.5064638115,
            "span_f1": 0.5654393716,
            "word_f1": 0.6273114281,
            "char_f1": 0.6536911482,
            "slu_p": 0.7166095871,
            "slu_r": 0.5785634182,
            "slu_f1": 0.6402296690,
        },
    ),  # noqa: E501
    "multi_hermit_predictions.jsonl": (
        False,
        13077,
        1,
        {
            "scenario_acc": 0.8373480156,
            "action_acc": 0.7970482527,
            "intent_acc": 0.7667660778,
            "span_p": 0.6326059050,
            "span_r": 0.6213853396,
            "span_f1": 0.6269454222,
            "word_f1": 0.6777678926,
            "char_f1": 0.7137806193,
            "slu_p": 0.7010009339,
            "slu_r": 0.6897072959,
            "slu_f1": 0.6953082583,
        },
    ),  # noqa: E501
    "multi_sfid_predictions.jsonl": (
        False,
        13077,
        1,
        {
            "scenario_acc": 0.8189951824,
            "action_acc": 0.7772424868,
            "intent_acc": 0.7586602432,
            "span_p": 0.6609282191,
            "span_r": 0.5518661735,
            "span_f1": 0.6014934262,
            "word_f1": 0.6582082297,
            "char_f1": 0.6891518430,
            "slu_p": 0.7334884411,
            "slu_r": 0.6222825416,
            "slu_f1": 0.6733247092,
        },
    ),  # noqa: E501
    "multi_slurp_hermit_predictions.jsonl": (
        False,
        13071,
        7,
        {
            "scenario_acc": 0.8568586948,
            "action_acc": 0.8141687706,
            "intent_acc": 0.7833371586,
            "span_p": 0.6742634797,
            "span_r": 0.6119051623,
            "span_f1": 0.6415726375,
            "word_f1": 0.6934488688,
            "char_f1": 0.7238999853,
            "slu_p": 0.7413322831,
            "slu_r": 0.6781725811,
            "slu_f1": 0.7083473126,
        },
    ),  # noqa: E501
}


@functools.lru_cache(maxsize=2)
def _gold(path: str, key: str) -> tuple:
    return tuple(load_gold(path, key=key))


def test_every_published_file_is_covered(shared_slurp: Path):
    assert sorted(p.name for p in (shared_slurp / "predictions").glob("*.jsonl")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_predictions(shared_slurp: Path, name: str):
    gold_keyed, n_scored, n_missing, figures = EXPECTED[name]
    key = "slurp_id" if gold_keyed else "file"
    gold = _gold(str(shared_slurp / "test.jsonl"), key)
    assert len(gold) == (2974 if gold_keyed else 13078)
    d = score_slurp(gold, load_predictions(shared_slurp / "predictions" / name, key=key)).to_dict()
    assert (d["n_scored"], d["n_missing"]) == (n_scored, n_missing)
    for k, v in figures.items():
        assert d[k] == pytest.approx(v, abs=1e-6), k
    assert d["intent_f1"] == pytest.approx(d["intent_acc"], abs=1e-12)  # micro


def _naive_load(shared_slurp: Path, name: str) -> tuple[list[dict], list[dict]]:
    """Read gold and predictions straight from the files (not through the module's loaders)."""
    by_sentence = EXPECTED[name][0]
    gold = []
    for line in (shared_slurp / "test.jsonl").read_text().splitlines():
        ex = json.loads(line)
        ents = [
            {"type": e["type"], "filler": " ".join(ex["tokens"][i]["surface"].lower() for i in e["span"])}
            for e in ex["entities"]
        ]
        keys = [str(ex["slurp_id"])] if by_sentence else [r["file"] for r in ex["recordings"]]
        gold += [_item(k, ex["scenario"], ex["action"], ents) for k in keys]
    pred = []
    for line in (shared_slurp / "predictions" / name).read_text().splitlines():
        ex = json.loads(line)
        pred.append(_item(str(ex["slurp_id" if by_sentence else "file"]), ex["scenario"], ex["action"], ex["entities"]))
    return gold, pred


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_naive_agrees_on_every_published_file(shared_slurp: Path, name: str):
    gold, pred = _naive_load(shared_slurp, name)
    key = "slurp_id" if EXPECTED[name][0] else "file"
    ours = score_slurp(
        _gold(str(shared_slurp / "test.jsonl"), key), load_predictions(shared_slurp / "predictions" / name, key=key)
    )
    _compare(ours, naive_official(gold, pred))


def test_gold_loader_fillers_and_intent(shared_slurp: Path):
    items = _gold(str(shared_slurp / "test.jsonl"), "slurp_id")
    by = {g["key"]: g for g in items}
    # slurp_id 6744: "put meeting with pawel for tomorrow ten am"
    assert by["6744"]["entities"][-1] == {"type": "time", "filler": "ten am"}
    assert all(g["scenario"] and g["action"] for g in items)


# ---------------------------------------------------------------------------------------------------- bad input


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOLD_LINE = json.dumps(
    {
        "slurp_id": 7,
        "scenario": "alarm",
        "action": "set",
        "tokens": [{"surface": "Jessica"}, {"surface": "'s"}, {"surface": "alarm"}],
        "entities": [{"type": "person", "span": [0, 1]}],
        "recordings": [{"file": "a.flac"}, {"file": "b.flac"}],
    }
)


def test_load_gold_keys_and_fillers(tmp_path: Path):
    g = _write(tmp_path / "g.jsonl", [GOLD_LINE])
    files = load_gold(g)
    assert [x["key"] for x in files] == ["a.flac", "b.flac"]
    assert files[0]["entities"] == [{"type": "person", "filler": "jessica 's"}]
    assert [x["key"] for x in load_gold(g, key="slurp_id")] == ["7"]


def test_bad_gold_span(tmp_path: Path):
    bad = json.loads(GOLD_LINE)
    bad["entities"][0]["span"] = [5]
    g = _write(tmp_path / "g.jsonl", [GOLD_LINE, json.dumps(bad)])
    with pytest.raises(SlurpFormatError, match=r"g\.jsonl:2: gold entity 0 has span"):
        load_gold(g)


def test_prediction_not_json_names_line(tmp_path: Path):
    p = _write(tmp_path / "p.jsonl", ['{"file": "a.flac", "scenario": "s", "action": "a", "entities": []}', "{oops"])
    with pytest.raises(SlurpFormatError, match=r"p\.jsonl:2: not valid JSON"):
        load_predictions(p)


def test_prediction_missing_field_names_line(tmp_path: Path):
    p = _write(tmp_path / "p.jsonl", ["", '{"file": "a.flac", "scenario": "s", "entities": []}'])
    with pytest.raises(SlurpFormatError, match=r"p\.jsonl:2: prediction lacks field 'action'"):
        load_predictions(p)
    q = _write(tmp_path / "q.jsonl", ['{"slurp_id": "7", "scenario": "s", "action": "a", "entities": []}'])
    with pytest.raises(SlurpFormatError, match=r"q\.jsonl:1: prediction lacks field 'file' \(it has 'slurp_id'"):
        load_predictions(q)


def test_bad_entities_reported_or_skipped(tmp_path: Path):
    g = _write(tmp_path / "g.jsonl", [GOLD_LINE])
    lines = [
        '{"file": "a.flac", "scenario": "alarm", "action": "set", "entities": [{"type": "person", "filler": "x"}]}',
        '{"file": "b.flac", "scenario": "alarm", "action": "set", "entities": [{"type": "person", "span": [0]}, '
        '{"type": "person", "filler": "jessica \'s"}]}',
    ]
    p = _write(tmp_path / "p.jsonl", lines)
    gold, pred = load_gold(g), load_predictions(p)
    with pytest.raises(SlurpFormatError, match=r"p\.jsonl:2: entity 0 is not"):
        score_slurp(gold, pred)
    s = score_slurp(gold, pred, bad_entities="skip")
    assert s.n_bad_entities == 1
    assert s.overall["span"].tp == 1.0 and s.overall["span"].fp == 1.0  # the malformed one is dropped, not an FP
    extra = [_item("a.flac", "alarm", "set", [{"type": "person", "filler": "x", "span": [0]}])]
    with pytest.raises(SlurpFormatError, match="entity 0 is not"):  # extra keys would never match exactly
        score_slurp(gold, extra)


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_table_and_json(tmp_path: Path, capsys):
    g = _write(tmp_path / "g.jsonl", [GOLD_LINE])
    p = _write(tmp_path / "p.jsonl", ['{"file": "a.flac", "scenario": "alarm", "action": "set", "entities": []}'])
    assert cli_main(["--gold", str(g), "--pred", str(p)], prog="x") == 0
    out = capsys.readouterr().out
    assert "SLU-F1" in out and "not predicted: 1 of 2" in out
    out_json = tmp_path / "s.json"
    assert cli_main(["--gold", str(g), "--pred", str(p), "--json", "--out", str(out_json), "--per-label"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["intent_acc"] == 1.0 and d["n_missing"] == 1 and d["span_r"] == 0.0 and d["key"] == "file"
    assert json.loads(out_json.read_text())["per_label"]["intent"]["alarm_set"]["tp"] == 1.0
    q = _write(tmp_path / "q.jsonl", ['{"slurp_id": "7", "scenario": "alarm", "action": "set", "entities": []}'])
    assert cli_main(["--gold", str(g), "--pred", str(q), "--gold-transcripts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_missing"] == 0


def test_cli_bad_input_exit_code(tmp_path: Path, capsys):
    g = _write(tmp_path / "g.jsonl", [GOLD_LINE])
    p = _write(tmp_path / "p.jsonl", ["not json"])
    assert cli_main(["--gold", str(g), "--pred", str(p)]) == 1
    assert "p.jsonl:1: not valid JSON" in capsys.readouterr().err


def test_cli_dispatch(tmp_path: Path, capsys):
    from slukd.cli import main

    g = _write(tmp_path / "g.jsonl", [GOLD_LINE])
    p = _write(tmp_path / "p.jsonl", ['{"file": "b.flac", "scenario": "alarm", "action": "set", "entities": []}'])
    assert main(["score", "slurp", "--gold", str(g), "--pred", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_scored"] == 1
