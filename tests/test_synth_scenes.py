"""The built-in captioning corpus: determinism, five distinct captions, audio-only pool, data-scarce option."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from slukd.data import synth_scenes as ss
from slukd.data.captions import prepare_clotho, read_manifest

SIZES = {"train": 6, "valid": 2, "test": 2, "audio_only": 3}


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
    with pytest.raises(ValueError, match="other settings"):
        ss.generate_scenes(out, tier="tiny", seed=2, sizes=SIZES)


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
    assert ss.cli_main(["--out", str(tmp_path / "z"), "--tier", "tiny", "--jobs", "1"], prog="t") == 0
    assert json.loads(capsys.readouterr().out)["clips"]["train"] == ss.TIERS["tiny"].n_train
