"""The built-in captioning corpus: determinism, five distinct captions, audio-only pool, data-scarce option."""

from __future__ import annotations

import csv
import ctypes.util
import hashlib
import importlib.util
import io
import json
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from slukd.data import synth_scenes as ss
from slukd.data import tts
from slukd.data.captions import prepare_clotho, read_manifest

SIZES = {"train": 6, "valid": 2, "test": 2, "audio_only": 3}
needs_espeak = pytest.mark.skipif(tts.available_backend() is None, reason="no espeak-ng program or library")


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (tqdm shows its bar only on one)."""

    def isatty(self) -> bool:
        return True


def _fake_speak(calls: list):
    def speak(text, voice="en-us", rate=160, pitch=50, variant="", **kw):
        calls.append({"text": text, "voice": voice, "variant": variant, "rate": rate, **kw})
        return np.sin(2 * np.pi * 200 * np.arange(8000) / 16000)

    return speak


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    info = ss.generate_scenes(out, tier="tiny", seed=3, sizes=SIZES)
    return out, info


def test_deterministic_for_a_seed(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    ss.generate_scenes(again, tier="tiny", seed=3, sizes=SIZES, jobs=2)
    assert _digest(out) == _digest(again)
    other = tmp_path / "other"
    ss.generate_scenes(other, tier="tiny", seed=4, sizes=SIZES)
    a = (out / "clotho_captions_development.csv").read_text()
    b = (other / "clotho_captions_development.csv").read_text()
    assert a != b


def test_layout_audio_and_five_distinct_captions(corpus):
    out, info = corpus
    assert info["clips"] == SIZES
    for split, name in ss.CAPTION_CSV.items():
        with open(out / name, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == SIZES[split]
        for r in rows:
            caps = [r[f"caption_{i}"] for i in range(1, 6)]
            assert all(caps), r
            assert len({c.lower() for c in caps}) == 5, caps
            wav, sr = sf.read(out / ss.SPLIT_DIRS[split] / r["file_name"])
            assert sr == 16000 and wav.ndim == 1
            assert 5.0 <= len(wav) / sr <= 10.0
            assert np.abs(wav).max() > 0.5  # normalised, not silent


def test_scene_descriptions_match_captions(corpus):
    out, _ = corpus
    rows = [json.loads(line) for line in (out / "scenes_train.jsonl").read_text().splitlines()]
    assert len(rows) == SIZES["train"]
    for r in rows:
        n_events = {"single": 1, "sequence": 2, "overlap": 2, "background": 2, "three": 3}[r["relation"]]
        assert len(r["events"]) == n_events
        for ev in r["events"]:
            assert 0.0 <= ev["onset"] < r["duration"]
            assert ev["duration"] > 0.0


def test_every_relation_and_kind_writes_five_distinct_captions():
    rng = np.random.default_rng(0)
    tier = ss.TIERS["full"]
    for kind in tier.kinds:
        for fade in ("", "in", "out"):
            ev = ss._draw_event(rng, tier, kind)
            ev.fade = fade
            other = ss._draw_event(rng, tier, "rain" if kind != "rain" else "siren")
            third = ss._draw_event(rng, tier, "beeps" if kind != "beeps" else "bell")
            for rel, evs in (
                ("single", [ev]),
                ("sequence", [ev, other]),
                ("background", [ev, other]),
                ("overlap", [ev, other]),
                ("three", [ev, other, third]),
            ):
                caps = ss.write_captions(evs, rel, np.random.default_rng(1))
                assert len(caps) == 5 and len({c.lower() for c in caps}) == 5, (kind, rel, caps)


def test_audio_only_pool_and_scarce_option(tmp_path):
    out = tmp_path / "scarce"
    info = ss.generate_scenes(out, tier="tiny", seed=1, sizes=SIZES, captioned_fraction=0.5)
    assert info["clips"]["train"] == 3
    assert info["clips"]["audio_only"] == SIZES["audio_only"] + 3
    paths = prepare_clotho(out, tmp_path / "manifests")
    train, pool = read_manifest(paths["train"]), read_manifest(paths["audio_only"])
    assert len(train) == 3 and len(pool) == 6
    assert all(r["captions"] == [] for r in pool)
    assert not {r["wav"] for r in train} & {r["wav"] for r in pool}
    # rerunning with the same settings is a no-op; other settings in the same folder are refused
    assert ss.generate_scenes(out, tier="tiny", seed=1, sizes=SIZES, captioned_fraction=0.5) == info
    from slukd.data.synth_slu import CorpusError

    with pytest.raises(CorpusError, match=r"seed 1 \(asked: 2, --corpus_seed\).*never deleted"):
        ss.generate_scenes(out, tier="tiny", seed=2, sizes=SIZES, captioned_fraction=0.5)
    with pytest.raises(CorpusError, match="--tier"):
        ss.check_scenes(out, tier="demo", seed=1, captioned_fraction=0.5)
    ss.check_scenes(out, tier="tiny", seed=1, captioned_fraction=0.5)  # the folder's own settings: fine


def test_voices_differ():
    a = ss.synthesize_speech("please open the window", "en-us+m3")
    b = ss.synthesize_speech("please open the window", "en-us+f3")
    assert len(a) > 8000 and len(b) > 8000
    n = min(len(a), len(b))
    assert np.abs(a[:n] - b[:n]).mean() > 0.01


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ss.cli_main(["--out", str(tmp_path / "x"), "--tier", "nope"], prog="t")
    assert ss.cli_main(["--out", str(tmp_path / "y"), "--captioned_fraction", "0"], prog="t") == 2
    assert (
        ss.cli_main(["--out", str(tmp_path / "z"), "--tier", "tiny", "--jobs", "1", "--noprogressbar"], prog="t") == 0
    )
    out = capsys.readouterr().out  # one readable line; the details are in corpus_info.json
    assert out.startswith(f"t: {tmp_path / 'z'}: train {ss.TIERS['tiny'].n_train}, ") and "clips (" in out
    assert json.loads((tmp_path / "z" / "corpus_info.json").read_text())["clips"]["train"] == ss.TIERS["tiny"].n_train


def test_speech_goes_through_slukd_data_tts(monkeypatch):
    calls: list = []
    monkeypatch.setattr(tts, "speak", _fake_speak(calls))
    x = ss.synthesize_speech("please open the window", "en-gb-scotland+m2", rate=170)
    assert len(x) == 8000
    (call,) = calls
    assert call["voice"] == "en-gb-scotland" and call["variant"] == "m2" and call["rate"] == 170
    assert call["trim"] == 0.0 and call["trim_threshold"] == 0.01 and call["dtype"] is np.float64
    ev = ss.Event("speech", attrs={"who": "man", "voice": "en-us+m3", "text": "call me", "rate": 160})
    assert ss.render_event(np.random.default_rng(0), ev).shape == (8000,) and calls[-1]["voice"] == "en-us"
    # one whitelist for both corpora (checked before any synthesis)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="whitelist"):
        ss.synthesize_speech("hello", "mb-us1")


@pytest.mark.skipif(
    importlib.util.find_spec("espeakng_loader") is None and ctypes.util.find_library("espeak-ng") is None,
    reason="no espeak-ng library (espeakng-loader or libespeak-ng)",
)
def test_speech_without_the_program_uses_the_library(monkeypatch):
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "espeak-ng" else which(name, *a, **k))
    x = ss.synthesize_speech("please open the window", "en-us+m3")
    assert x.dtype == np.float64 and 8000 < len(x) < 48000 and 0.01 < np.abs(x).max() <= 1.0


def test_progress_bar_over_clips(tmp_path, monkeypatch):
    monkeypatch.setattr(tts, "speak", _fake_speak([]))
    sizes = {"train": 3, "valid": 1, "test": 1, "audio_only": 2}
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    ss.generate_scenes(tmp_path / "a", tier="tiny", seed=0, sizes=sizes)
    text = err.getvalue()
    assert "scenes train: 100%|" in text and "3/3" in text and "scenes audio_only: 100%|" in text and "2/2" in text
    err.seek(0)
    err.truncate()
    ss.generate_scenes(tmp_path / "b", tier="tiny", seed=0, sizes=sizes, progress=False)
    assert "%|" not in err.getvalue()  # no bar (the log may write there)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


@needs_espeak
def test_parallel_generation_with_a_bar_is_deterministic(tmp_path, monkeypatch):
    sizes = {"train": 10, "valid": 1, "test": 1, "audio_only": 1}  # > 8 clips: the process pool is used
    ss.generate_scenes(tmp_path / "serial", tier="tiny", seed=5, sizes=sizes, jobs=1, progress=False)
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    ss.generate_scenes(tmp_path / "pool", tier="tiny", seed=5, sizes=sizes, jobs=2)
    assert "10/10" in err.getvalue()
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "pool")
