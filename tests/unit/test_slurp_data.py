"""slukd.data.slurp: manifests from SLURP-layout folders, options, bad input (errors naming file:line, skips)."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slukd.data.slurp import (
    COLUMNS,
    SlurpFormatError,
    prepare_slurp,
    prepare_slurp_with_report,
    read_manifest,
    read_prepare_report,
)
from slukd.data.target import parse


def _rec(sid, scenario, action, words, ents, files, intent=None):
    return {
        "slurp_id": sid,
        "sentence": " ".join(words),
        "intent": intent or f"{scenario}_{action}",
        "action": action,
        "scenario": scenario,
        "tokens": [{"surface": w, "id": i} for i, w in enumerate(words)],
        "entities": [{"span": s, "type": t} for t, s in ents],
        "recordings": [{"file": f} for f in files],
    }


def _make(root: Path, lines: dict[str, list], audio: dict[str, float], raw: dict[str, str] | None = None) -> Path:
    d = root / "dataset" / "slurp"
    d.mkdir(parents=True)
    for split, recs in lines.items():
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for split, text in (raw or {}).items():
        (d / f"{split}.jsonl").write_text(text)
    for name, seconds in audio.items():
        sub = root / ("slurp_synth" if name.startswith("synth") else "slurp_real")
        sub.mkdir(exist_ok=True)
        sf.write(sub / name, np.zeros(int(16000 * seconds), dtype=np.float32), 16000, format="FLAC")
    return root


@pytest.fixture
def corpus(tmp_path):
    train = [
        _rec(
            1,
            "iot",
            "hue_lightoff",
            ["turn", "Off", "the", "Living", "room", "lights"],
            [("house_place", [3, 4])],
            ["audio-1.flac", "audio-1-headset.flac"],
            intent="iot_wrong",
        ),
        _rec(
            2,
            "calendar",
            "set",
            ["meet", "jessica", "'s", "mum", "at", "noon", "monday"],
            [("date", [6]), ("person", [1, 2, 3]), ("time", [5])],
            ["audio-2.flac"],
        ),
    ]
    test = [_rec(3, "weather", "query", ["is", "it", "sunny"], [], ["audio-3.flac"])]
    synth = [_rec(4, "qa", "maths", ["two", "plus", "two"], [], ["synth-4.flac"])]
    audio = {
        "audio-1.flac": 1.5,
        "audio-1-headset.flac": 1.0,
        "audio-2.flac": 3.0,
        "audio-3.flac": 0.5,
        "synth-4.flac": 0.25,
    }
    return _make(tmp_path / "slurp", {"train": train, "test": test, "train_synthetic": synth}, audio)


def test_manifest_rows(corpus, tmp_path):
    paths = prepare_slurp(corpus, tmp_path / "out")
    assert set(paths) == {"train", "train_synthetic", "test"}  # devel missing: skipped, reported
    with open(paths["train"], newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    rows = {r["ID"]: r for r in read_manifest(paths["train"])}
    r = rows["audio-1"]
    assert r["wav"] == "$data_root/slurp_real/audio-1.flac" and r["duration"] == pytest.approx(1.5)
    assert r["intent"] == "iot_hue_lightoff" and r["action"] == "hue_lightoff"  # never the raw intent field
    assert r["transcript"] == "turn off the living room lights"
    assert r["entities"] == [{"type": "house_place", "filler": "living room"}]
    r2 = rows["audio-2"]
    # entities in span order, filler = lowercased span tokens joined by spaces
    assert [e["type"] for e in r2["entities"]] == ["person", "time", "date"]
    assert r2["entities"][0]["filler"] == "jessica 's mum"
    p = parse(r2["target"])
    assert p.ok and p.entities == r2["entities"] and p.transcript == "meet jessica 's mum at noon monday"
    syn = read_manifest(paths["train_synthetic"])
    assert syn[0]["wav"] == "$data_root/slurp_synth/synth-4.flac"
    rep = read_prepare_report(tmp_path / "out")
    assert rep.rows == {"train": 3, "test": 1, "train_synthetic": 1} and rep.missing_splits == ["devel"]
    # nothing written into the data folder
    assert not list(corpus.rglob("*.csv"))
    with pytest.raises(ValueError, match="data folder"):
        prepare_slurp(corpus, corpus / "manifests")


def test_options_and_speechbrain_reads_it(corpus, tmp_path):
    paths, rep = prepare_slurp_with_report(
        corpus, tmp_path / "o", splits=("train",), max_duration=2.0, headset_only=True
    )
    assert [r["ID"] for r in read_manifest(paths["train"])] == ["audio-1-headset"]
    assert rep.skipped["train"] == {"not_headset": 2}
    paths, rep = prepare_slurp_with_report(corpus, tmp_path / "o2", splits=("train",), max_duration=2.0)
    assert rep.skipped["train"] == {"too_long": 1} and rep.rows["train"] == 2
    from speechbrain.dataio.dataio import load_data_csv

    data = load_data_csv(str(paths["train"]), replacements={"data_root": str(corpus)})
    assert Path(data["audio-1"]["wav"]).is_file()


def test_reuse_when_unchanged(corpus, tmp_path):
    prepare_slurp(corpus, tmp_path / "o", splits=("test",))
    first = (tmp_path / "o" / "test.csv").stat().st_mtime_ns
    time.sleep(0.01)
    prepare_slurp(corpus, tmp_path / "o", splits=("test",))
    assert (tmp_path / "o" / "test.csv").stat().st_mtime_ns == first
    prepare_slurp(corpus, tmp_path / "o", splits=("test",), headset_only=True)  # other options: redone
    assert (tmp_path / "o" / "test.csv").stat().st_mtime_ns != first


def _bad_line_corpus(tmp_path, line: str, audio=True) -> Path:
    ok = json.dumps(_rec(1, "weather", "query", ["is", "it", "sunny"], [], ["audio-1.flac"]))
    return _make(tmp_path / "bad", {}, {"audio-1.flac": 0.5} if audio else {}, raw={"test": ok + "\n" + line + "\n"})


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"slurp_id": 2, "sentence": "x"', "malformed_json"),
        (
            json.dumps(_rec(2, "weather", "query", ["a", "b"], [("date", [1, 2])], ["audio-1.flac"])),
            "span_out_of_range",
        ),
        (json.dumps(_rec(2, "spaceflight", "launch", ["a"], [], ["audio-1.flac"])), "unknown_scenario"),
        (json.dumps({"slurp_id": 2, "sentence": "a"}), "bad_field"),
    ],
)
def test_bad_lines_name_file_and_line_or_are_skipped(tmp_path, line, reason, caplog):
    root = _bad_line_corpus(tmp_path, line)
    with pytest.raises(SlurpFormatError, match=r"test\.jsonl:2"):
        prepare_slurp(root, tmp_path / "o", splits=("test",))
    with caplog.at_level(logging.WARNING, logger="slukd.data.slurp"):
        paths, rep = prepare_slurp_with_report(root, tmp_path / "o", splits=("test",), skip_bad=True)
    assert rep.skipped["test"] == {reason: 1} and rep.rows["test"] == 1
    assert "test.jsonl:2" in caplog.text


def test_missing_and_unreadable_audio(tmp_path):
    line = json.dumps(_rec(2, "weather", "query", ["is", "it"], [], ["audio-2.flac", "audio-3.flac"]))
    root = _bad_line_corpus(tmp_path, line)
    (root / "slurp_real" / "audio-3.flac").write_bytes(b"not a flac")
    with pytest.raises(SlurpFormatError, match=r"test\.jsonl:2: missing audio .*audio-2\.flac"):
        prepare_slurp(root, tmp_path / "o", splits=("test",))
    _, rep = prepare_slurp_with_report(root, tmp_path / "o", splits=("test",), skip_bad=True)
    assert rep.skipped["test"] == {"missing_audio": 1, "unreadable_audio": 1} and rep.rows["test"] == 1
    # metadata only: no audio needed, duration -1
    paths, rep = prepare_slurp_with_report(root, tmp_path / "m", splits=("test",), audio_check=False)
    assert rep.rows["test"] == 3 and {r["duration"] for r in read_manifest(paths["test"])} == {-1.0}


def test_no_split_at_all(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the splits"):
        prepare_slurp(tmp_path / "empty", tmp_path / "o")


def test_real_slurp_test_metadata(shared_slurp, tmp_path):
    """All 13,078 test recordings (metadata only): one row each, targets parse back to the gold fields."""
    paths, rep = prepare_slurp_with_report(shared_slurp, tmp_path / "o", splits=("test",), audio_check=False)
    rows = read_manifest(paths["test"])
    assert len(rows) == 13078 and rep.sentences["test"] == 2974 and rep.total_skipped() == 0
    assert len({r["ID"] for r in rows}) == 13078
    for r in rows[::7]:
        p = parse(r["target"])
        assert p.ok and p.intent == r["intent"] and p.entities == r["entities"] and p.transcript == r["transcript"]


def test_repeated_ids_exact_kept_once_conflicting_named_with_both_lines(tmp_path, caplog):
    a = _rec(1, "weather", "query", ["is", "it", "sunny"], [], ["audio-1.flac"])
    a_more = _rec(1, "weather", "query", ["is", "it", "sunny"], [], ["audio-1.flac", "audio-4.flac"])
    b = _rec(2, "alarm", "set", ["wake", "me", "at", "six"], [("time", [3])], ["audio-2.flac"])
    b_other = _rec(2, "alarm", "set", ["wake", "me", "at", "seven"], [("time", [3])], ["audio-5.flac"])
    c = _rec(3, "iot", "coffee", ["make", "coffee"], [], ["audio-3.flac"])
    c_steals = _rec(6, "iot", "cleaning", ["clean", "up"], [], ["audio-3.flac"])  # c's recording, other labels
    lines = [a, b, c, a_more, b_other, c_steals]
    audio = {f"audio-{i}.flac": 0.5 for i in range(1, 6)}
    root = _make(tmp_path / "dup", {"train": lines}, audio)
    with pytest.raises(SlurpFormatError, match=r"train\.jsonl:5: slurp_id 2 was first read at .*train\.jsonl:2"):
        prepare_slurp(root, tmp_path / "strict", splits=("train",))
    with caplog.at_level(logging.WARNING, logger="slukd.data.slurp"):
        paths, rep = prepare_slurp_with_report(root, tmp_path / "o", splits=("train",), skip_bad=True)
    assert [r["ID"] for r in read_manifest(paths["train"])] == ["audio-1", "audio-2", "audio-3", "audio-4"]
    assert rep.skipped["train"] == {
        "duplicate_slurp_id": 1,  # line 4 repeats line 1 (its new recording audio-4 is kept)
        "duplicate_recording": 1,  # audio-1 on line 4
        "conflicting_slurp_id": 1,  # line 5: slurp_id 2 with another sentence
        "conflicting_recording": 1,  # line 6: audio-3 with other labels
    }
    assert rep.sentences["train"] == 4  # slurp_ids 1, 2, 3, 6 (line 6 is read; only its recording is refused)
    assert "train.jsonl:5: slurp_id 2 was first read at" in caplog.text
    assert "sentence: 'wake me at six' vs 'wake me at seven'" in caplog.text
    assert "train.jsonl:6: recording audio-3 was first read at" in caplog.text and "train.jsonl:3" in caplog.text
    saved = json.loads((tmp_path / "o" / "prepare_report.json").read_text())["report"]["skipped"]
    assert saved == {"train": rep.skipped["train"]} and read_prepare_report(tmp_path / "o").skipped == saved
    # exact repeats alone are not errors: kept once and counted without skip_bad
    root2 = _make(tmp_path / "dup2", {"test": [a, c, a_more]}, audio)
    paths, rep = prepare_slurp_with_report(root2, tmp_path / "o2", splits=("test",))
    assert rep.rows["test"] == 3 and rep.skipped["test"] == {"duplicate_slurp_id": 1, "duplicate_recording": 1}


def test_read_manifest_checks_columns_fields_and_entities(tmp_path):
    header = ",".join(COLUMNS) + "\n"
    good = "x,$data_root/a.flac,1.0,1,alarm,set,alarm_set,hi,[],alarm_set _SEP hi\n"
    cases = {
        "cols": ("ID,wav\nx,y\n", r"cols\.csv:1: not an SLU manifest \(missing columns"),
        "short": (header + good + "y,w,1.0\n", r"short\.csv:3: bad manifest row"),
        "entities": (header + good.replace("[]", '"{}"'), r"entities\.csv:2: .*not a JSON list"),
    }
    for name, (text, pattern) in cases.items():
        (tmp_path / f"{name}.csv").write_text(text)
        with pytest.raises(SlurpFormatError, match=pattern):
            read_manifest(tmp_path / f"{name}.csv")
    (tmp_path / "latin.csv").write_bytes((header + good).encode() + b"y,w,1.0,1,alarm,set,alarm_set,caf\xe9,[],t\n")
    with pytest.raises(SlurpFormatError, match=r"latin\.csv: not UTF-8"):
        read_manifest(tmp_path / "latin.csv")
