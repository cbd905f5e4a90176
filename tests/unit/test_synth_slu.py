"""The built-in SLU corpus (slukd.data.synth_slu) and espeak-ng synthesis (slukd.data.tts)."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest

from slukd.data import slu_vocab as V
from slukd.data import synth_slu as S
from slukd.data import tts
from slukd.data.slurp import SlurpFormatError, prepare_slurp_with_report, read_manifest
from slukd.data.target import SLURP_ENTITY_TYPES, SLURP_INTENTS, SLURP_SCENARIO_ACTIONS, parse

needs_espeak = pytest.mark.skipif(tts.available_backend() is None, reason="no espeak-ng binary or library")


def test_templates_cover_slurp_labels():
    assert sorted(V.TEMPLATES) == sorted(SLURP_INTENTS)
    used = set()
    for tpls in V.TEMPLATES.values():
        assert len(tpls) >= 2
        for t in tpls:
            for name in S._placeholders(t):
                assert name in V.SLOT_VALUES, name
                etype = V.PLACEHOLDER_TYPES.get(name, name)
                assert etype is None or etype in SLURP_ENTITY_TYPES
                used.add(etype)
    assert len(used - {None}) >= 30
    # the demo tier's core templates of different intents never share their fixed words
    fixed = {}
    for intent, tpls in V.TEMPLATES.items():
        for t in tpls[: V.DEMO_TEMPLATES]:
            key = " ".join(w for w in t.split() if not w.startswith("{"))
            assert key not in fixed, (intent, fixed.get(key))
            fixed[key] = intent


@pytest.mark.parametrize("tier", ["tiny", "demo", "full"])
def test_sentences_disjoint_deterministic_and_valid(tier):
    a = S.make_sentences(tier, seed=3)
    assert a == S.make_sentences(tier, seed=3)
    assert a != S.make_sentences(tier, seed=4)
    texts = {s: {r["sentence"] for r in recs} for s, recs in a.items()}
    assert (
        not texts["train"] & texts["test"]
        and not texts["train"] & texts["devel"]
        and not texts["devel"] & texts["test"]
    )
    for recs in a.values():
        assert {r["scenario"] for r in recs} == set(SLURP_SCENARIO_ACTIONS)
        for r in recs:
            assert r["intent"] == f"{r['scenario']}_{r['action']}" and r["intent"] in SLURP_INTENTS
            for e in r["entities"]:
                assert 0 <= min(e["span"]) and max(e["span"]) < len(r["tokens"])
    assert {r["intent"] for r in a["train"]} == set(SLURP_INTENTS)
    if tier == "demo":  # sizes the learning curve was measured with
        assert 1000 <= len(a["train"]) <= 1300 and len(a["test"]) == 300


@needs_espeak
def test_voices_differ_and_audio_format():
    x = tts.speak("turn the lights off", voice="en-us")
    assert x.dtype == np.float32 and x.ndim == 1 and 0.5 < x.shape[0] / 16000 < 3.0
    assert np.abs(x).max() <= 1.0
    y = tts.speak("turn the lights off", voice="en-gb-scotland")
    z = tts.speak("turn the lights off", voice="en-us", variant="f3")
    n = min(len(x), len(y), len(z))
    assert not np.allclose(x[:n], y[:n], atol=1e-3) and not np.allclose(x[:n], z[:n], atol=1e-3)

    # spectra differ too (not just a shift): compare mean log-magnitude spectra
    def spec(a):
        from scipy.signal import welch

        return np.log(welch(a, fs=16000, nperseg=512)[1] + 1e-10)

    assert np.abs(spec(x) - spec(y)).mean() > 0.3 and np.abs(spec(x) - spec(z)).mean() > 0.3
    assert np.array_equal(x, tts.speak("turn the lights off", voice="en-us"))  # deterministic
    with pytest.raises(ValueError, match="whitelist"):
        tts.speak("hello", voice="mb-us1")
    with pytest.raises(ValueError, match="whitelist"):
        tts.speak("hello", variant="robot")


def test_resampler_and_noise():
    t = np.arange(22050) / 22050
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = tts.resample_to_16k(x)
    assert y.shape == (16000,) and y.dtype == np.float32
    f = np.argmax(np.abs(np.fft.rfft(y[2000:14000]))) * 16000 / 12000
    assert abs(f - 440) < 3
    y = 0.3 * y
    n = S.add_noise(y, 10.0, seed=1)
    snr = 10 * np.log10(np.mean(y**2) / np.mean((n - y) ** 2))
    assert abs(snr - 10.0) < 0.5 and np.array_equal(n, S.add_noise(y, 10.0, seed=1))


@needs_espeak
def test_tiny_corpus_prepare_reuse_and_worker_invariance(tmp_path):
    scen = ["weather", "iot"]
    out = S.synthesize_slu_corpus(tmp_path / "c1", tier="tiny", seed=0, num_workers=1, scenarios=scen)
    paths, rep = prepare_slurp_with_report(out, tmp_path / "m", splits=("train", "devel", "test"))
    assert rep.total_skipped() == 0 and rep.rows["train"] > 0
    rows = read_manifest(paths["train"])
    assert {r["scenario"] for r in rows} == set(scen)
    for r in rows:
        p = parse(r["target"])
        assert p.ok and p.intent == r["intent"] and 0.3 < r["duration"] < 4.0
    # complete: reused without synthesis
    S.synthesize_slu_corpus(out, tier="tiny", seed=0, num_workers=1, scenarios=scen)
    assert (
        json.loads((out / S.MARKER).read_text())["synthesised_now"] == len(rows) + rep.rows["devel"] + rep.rows["test"]
    )
    # partial (a deleted file, no marker): completed, bit-identical, only the missing file made
    victim = sorted((out / "slurp_real").iterdir())[0]
    before = victim.read_bytes()
    victim.unlink()
    (out / S.MARKER).unlink()
    S.synthesize_slu_corpus(out, tier="tiny", seed=0, num_workers=1, scenarios=scen)
    assert victim.read_bytes() == before
    assert json.loads((out / S.MARKER).read_text())["synthesised_now"] == 1
    # two workers give the same corpus
    out2 = S.synthesize_slu_corpus(tmp_path / "c2", tier="tiny", seed=0, num_workers=2, scenarios=scen)
    for f in sorted((out / "slurp_real").iterdir()):
        assert (out2 / "slurp_real" / f.name).read_bytes() == f.read_bytes()
    assert (out2 / "dataset/slurp/test.jsonl").read_text() == (out / "dataset/slurp/test.jsonl").read_text()
    # a training run (replace=False) never deletes another configuration: one error naming the flags
    before = sorted(p.name for p in (out2 / "slurp_real").iterdir())
    with pytest.raises(S.CorpusError, match=r"tier tiny \(this run asks for demo: --tier\).*never deletes"):
        S.synthesize_slu_corpus(out2, tier="demo", seed=0, scenarios=scen, replace=False)
    with pytest.raises(S.CorpusError, match="--corpus_seed"):
        S.check_corpus(out2, tier="tiny", seed=3)
    S.check_corpus(out2, tier="tiny", seed=0)
    assert sorted(p.name for p in (out2 / "slurp_real").iterdir()) == before
    # slukd synth (replace=True) regenerates another configuration in the same folder; foreign data is refused
    S.synthesize_slu_corpus(out2, tier="tiny", seed=1, num_workers=2, scenarios=["weather"])
    assert {json.loads(line)["scenario"] for line in (out2 / "dataset/slurp/train.jsonl").open()} == {"weather"}
    assert all(f.name.startswith("synth-") for f in (out2 / "slurp_real").iterdir())
    assert len(list((out2 / "slurp_real").iterdir())) < len(list((out / "slurp_real").iterdir()))
    foreign = tmp_path / "foreign"
    (foreign / "slurp_real").mkdir(parents=True)
    with pytest.raises(S.CorpusError, match="did not make"):
        S.synthesize_slu_corpus(foreign, tier="tiny")


@needs_espeak
def test_slurp_tts_and_cli(tmp_path, capsys):
    src = tmp_path / "devel.jsonl"
    rec = {
        "slurp_id": 7,
        "sentence": "wake me up at five am",
        "scenario": "alarm",
        "action": "set",
        "intent": "alarm_set",
        "tokens": [{"surface": w} for w in "wake me up at five am".split()],
        "entities": [{"type": "time", "span": [4, 5]}],
        "recordings": [{"file": "audio-x.flac"}],
    }
    src.write_text(json.dumps(rec) + "\n")
    src2 = tmp_path / "train.jsonl"
    src2.write_text(json.dumps({**rec, "slurp_id": 8}) + "\n")
    from slukd.cli import main

    out = str(tmp_path / "t")
    assert main(["synth", "slu", "--out", out, "--tier", "tiny", "--from-slurp-jsonl", str(src), str(src2)]) == 0
    assert f"{out}: " in capsys.readouterr().out  # one readable line, both files (several files after one flag)
    assert (tmp_path / "t" / "dataset" / "slurp" / "train.jsonl").read_text().count("\n") == 1
    paths, rep = prepare_slurp_with_report(tmp_path / "t", tmp_path / "m", splits=("devel",))
    (row,) = read_manifest(paths["devel"])
    assert row["entities"] == [{"type": "time", "filler": "five am"}] and row["duration"] > 0.5
    bad = tmp_path / "test.jsonl"
    bad.write_text(json.dumps(rec) + "\n{oops\n")
    assert main(["synth", "slu", "--out", str(tmp_path / "u"), "--from-slurp-jsonl", str(bad)]) == 2
    assert "test.jsonl:2" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "t")


@pytest.mark.slow
@needs_espeak
def test_demo_tier_full_size(tmp_path):
    out = S.synthesize_slu_corpus(tmp_path / "demo", tier="demo", seed=0, num_workers=2)
    _, rep = prepare_slurp_with_report(out, tmp_path / "m", splits=("train", "devel", "test"))
    assert rep.rows == {"train": 2240, "devel": 180, "test": 600}


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (tqdm shows its bar only on one)."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_over_recordings_and_flag(tmp_path, monkeypatch):
    calls = []

    def fake_speak(text, **kw):
        calls.append(text)
        return np.full(4000, 0.1, dtype=np.float32)

    monkeypatch.setattr(tts, "speak", fake_speak)  # _run_jobs looks it up at call time (one worker: this process)
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    S.synthesize_slu_corpus(tmp_path / "a", tier="tiny", num_workers=1, scenarios=["weather"])
    n = len(calls)
    assert n > 3 and "synth slu: 100%|" in err.getvalue() and f"{n}/{n}" in err.getvalue()
    err.seek(0)
    err.truncate()
    S.synthesize_slu_corpus(tmp_path / "b", tier="tiny", num_workers=1, scenarios=["weather"], progress=False)
    assert len(calls) == 2 * n and "%|" not in err.getvalue()
    args = ["--out", str(tmp_path / "c"), "--tier", "tiny", "--workers", "1", "--scenarios", "weather"]
    assert S.cli_main(args + ["--noprogressbar"], prog="t") == 0
    assert len(calls) == 3 * n and "%|" not in err.getvalue()


def test_slurp_tts_input_errors_are_slurp_format_errors(tmp_path):
    good = {
        "slurp_id": 7,
        "sentence": "wake me up",
        "scenario": "alarm",
        "action": "set",
        "tokens": [{"surface": w} for w in "wake me up".split()],
        "entities": [{"type": "time", "span": [5]}],  # outside the tokens: prepare_slurp would refuse it
    }
    src = tmp_path / "test.jsonl"
    src.write_text(json.dumps(dict(good, entities=[])) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(SlurpFormatError, match=r"test\.jsonl:2: .*span_out_of_range"):
        S.synthesize_slu_corpus(tmp_path / "out", tier="tiny", from_slurp_jsonl=str(src))
    src.write_bytes(json.dumps(dict(good, entities=[])).encode() + b"\n" + b'{"sentence": "caf\xe9"}\n')
    with pytest.raises(SlurpFormatError, match=r"test\.jsonl:2: not UTF-8"):
        S.synthesize_slu_corpus(tmp_path / "out", tier="tiny", from_slurp_jsonl=str(src))
    src.write_text(json.dumps(dict(good, entities=[], sentence=" ", tokens=[])) + "\n")
    with pytest.raises(SlurpFormatError, match=r"test\.jsonl:1: empty sentence"):
        S.synthesize_slu_corpus(tmp_path / "out", tier="tiny", from_slurp_jsonl=str(src))
