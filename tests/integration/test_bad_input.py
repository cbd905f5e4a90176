"""Bad input, item by item (issue 9.4): each either stops the run at the start with an error naming the file and
line/field, or is skipped/handled and counted. docs/reliability.md lists the policy of each."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from slukd.config import UnknownHparamError, load_hparams
from slukd.data.audio import AudioError, AudioStats, check_audio_files, load_audio
from slukd.data.slurp import SlurpFormatError, prepare_slurp_with_report, read_manifest
from slukd.slu.data import BadAudioError, ManifestError, read_manifest_checked
from slukd.utils.run import IncompatibleRunError
from tests.helpers_slu import HP, main, make_corpus, tiny_argv, write_order

SR = 16000


def _tone(seconds: float = 0.5, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _flac(path: Path, x: np.ndarray | None = None, sr: int = SR) -> Path:
    sf.write(path, _tone() if x is None else x, sr, format="FLAC")
    return path


# ------------------------------------------------------------------------------------------------ load_audio
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "missing"),
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: p.write_text("not audio at all\n" * 20), "unreadable"),
        (lambda p: p.write_bytes(_flac(p).read_bytes()[:30]), "unreadable"),  # header cut
        (lambda p: p.write_bytes(_flac(p).read_bytes()[: p.stat().st_size // 2]), "truncated"),  # FLAC body cut
        (lambda p: p.write_bytes(_wav(p).read_bytes()[: p.stat().st_size // 2]), "truncated"),  # WAV body cut
        (lambda p: sf.write(p, np.zeros(0, np.float32), SR, format="WAV"), "no_samples"),
        (lambda p: sf.write(p, _nan_tone(), SR, format="WAV", subtype="FLOAT"), "non_finite"),
    ],
)
def test_unusable_audio_is_an_error_naming_the_file(tmp_path, make, reason):
    p = tmp_path / "clip.audio"
    make(p)
    with pytest.raises(AudioError) as err:
        load_audio(p)
    assert err.value.reason == reason and str(p) in str(err.value) and f"({reason})" in str(err.value)


def _wav(p: Path) -> Path:
    sf.write(p, _tone(), SR, format="WAV", subtype="PCM_16")
    return p


def _nan_tone() -> np.ndarray:
    x = _tone()
    x[10] = np.nan
    x[20] = np.inf
    return x


def test_resample_downmix_crop_silence_are_handled_counted_and_logged_once(tmp_path, caplog):
    stats = AudioStats()
    a = tmp_path / "a.flac"
    sf.write(a, _tone(0.5, 44100, channels=2), 44100, format="FLAC")
    b = tmp_path / "b.wav"
    sf.write(b, _tone(0.5, 8000, channels=2), 8000, format="WAV")
    with caplog.at_level(logging.INFO, logger="slukd.data.audio"):
        wa, ia = load_audio(a, stats=stats)
        wb, ib = load_audio(b, stats=stats)
    assert wa.dtype == torch.float32 and wa.dim() == 1 and abs(wa.numel() - 8000) <= 1
    assert abs(wb.numel() - 8000) <= 1 and ia.sample_rate == 44100 and ib.channels == 2
    assert ia.resampled and ia.downmixed and ib.resampled and ib.downmixed
    assert stats.as_dict()["resampled"] == 2 and stats.as_dict()["downmixed"] == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("audio resampled" in m for m in msgs) == 1 and sum("audio downmixed" in m for m in msgs) == 1
    # down-mix is the channel mean: (x + 0.5 x) / 2 = 0.75 x
    c = tmp_path / "c.wav"
    sf.write(c, _tone(0.1, SR, channels=2), SR, format="WAV", subtype="FLOAT")
    wc, _ = load_audio(c, stats=stats)
    assert torch.allclose(wc, torch.from_numpy(0.75 * _tone(0.1)), atol=1e-6)
    # very long clip: cropped (counted) or an error, per option
    long = _flac(tmp_path / "long.flac", _tone(3.0))
    w, info = load_audio(long, max_seconds=1.0, stats=stats)
    assert w.numel() == SR and info.cropped and info.seconds == pytest.approx(3.0) and stats.counts["cropped"] == 1
    with pytest.raises(AudioError, match="too_long"):
        load_audio(long, max_seconds=1.0, long_policy="error")
    # silence: kept as it is, counted
    quiet = _flac(tmp_path / "quiet.flac", np.zeros(SR // 2, np.float32))
    w, info = load_audio(quiet, stats=stats)
    assert info.silent and w.abs().max() == 0 and stats.counts["silent"] == 1


def test_check_audio_files_collects_bad_files_without_raising(tmp_path):
    good = _flac(tmp_path / "good.flac")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    check = check_audio_files([good, empty, tmp_path / "gone.flac", good])
    assert check.n_files == 3 and set(check.bad) == {str(empty), str(tmp_path / "gone.flac")}
    assert check.reasons() == {"empty_file": 1, "missing": 1}


# ------------------------------------------------------------------------------------------------ the recipe
def _corrupt_corpus(root: Path) -> Path:
    """The tiny tone corpus with one problem per recording of train (ids 0-11: email 0-2, qa 3-5, alarm 6-8,
    weather 9-11) and bad lines / labels in the jsonl files."""
    corpus = make_corpus(root, {"train": 3, "devel": 1, "test": 1})
    audio = corpus / "slurp_real"
    (audio / "audio-0.flac").write_bytes((audio / "audio-0.flac").read_bytes()[:-2000])  # truncated FLAC
    sf.write(audio / "audio-3.flac", _nan_tone(), SR, format="WAV", subtype="FLOAT")  # NaN (a WAV named .flac)
    sf.write(audio / "audio-6.flac", np.zeros(6400, np.float32), SR, format="FLAC")  # silent
    sf.write(audio / "audio-9.flac", _tone(0.4, 44100, channels=2), 44100, format="FLAC")  # 44.1 kHz stereo
    sf.write(audio / "audio-1.flac", _tone(3.0), SR, format="FLAC")  # long
    (audio / "audio-4.flac").unlink()  # missing
    (audio / "audio-7.flac").write_bytes(b"")  # empty
    (audio / "audio-10.flac").write_text("hello\n" * 50)  # not audio
    train = corpus / "dataset" / "slurp" / "train.jsonl"
    lines = train.read_text().splitlines()
    lines.insert(2, '{"slurp_id": 99, "sentence": "broken')  # malformed JSON line
    train.write_text("\n".join(lines) + "\n")
    test = corpus / "dataset" / "slurp" / "test.jsonl"

    def item(sid: int, sentence: str, scenario: str, action: str) -> dict:
        tokens = [{"surface": w} for w in sentence.split()]
        recs = [{"file": f"audio-{sid}.flac"}]
        return {"slurp_id": sid, "sentence": sentence, "scenario": scenario, "action": action, "entities": [],
                "tokens": tokens, "recordings": recs}  # fmt: skip

    # a scenario of no task, an intent never trained, a label outside SLURP's inventory
    extra = [
        item(12, "play jazz", "music", "play"),
        item(13, "any alarms", "alarm", "query"),
        item(14, "hm", "zzz", "x"),
    ]
    test.write_text(test.read_text() + "".join(json.dumps(x) + "\n" for x in extra))
    return corpus


def test_recipe_skips_and_counts_bad_input_then_refuses_an_incompatible_rerun(tmp_path):
    corpus = _corrupt_corpus(tmp_path / "c")
    order = write_order(tmp_path)
    out = tmp_path / "run"
    argv = tiny_argv(corpus, out, order, "seq_kd", "--max_audio_seconds=1.0")
    assert main(argv) == 0
    prep = json.loads((out / "manifests" / "prepare_report.json").read_text())["report"]
    assert prep["skipped"]["train"] == {"malformed_json": 1, "missing_audio": 1, "unreadable_audio": 2}
    assert prep["skipped"]["test"] == {"unknown_scenario": 1}
    check = json.loads((out / "audio_check.json").read_text())["check"]
    assert check["reasons"] == {"truncated": 1, "non_finite": 1}
    assert all(str(corpus) in k for k in check["bad"])
    step = json.loads((out / "results" / "step2.json").read_text())
    data = step["data"]
    assert data["audio_skipped"]["train"] == {"truncated": 1, "non_finite": 1}
    assert data["audio_notes"] == {"resampled": 1, "downmixed": 1, "cropped": 1, "silent": 1}
    assert data["test_outside_tasks"] == {"music": 1} and data["test_unseen_intents"] == {
        "alarm_query": 1,
        "music_play": 1,
    }
    assert step["seen"]["n"] == 5  # 4 scenarios x 1 + the untrained intent; the music item is not scored
    # another setting in the same output folder: refused before anything is touched
    mtime = (out / "results" / "step2.json").stat().st_mtime_ns
    # names the settings, old and new values
    with pytest.raises(IncompatibleRunError, match=r"lr: 0\.001 -> 0\.5; opt_class\.lr: 0\.001 -> 0\.5"):
        main([*argv, "--lr=0.5"])
    assert (out / "results" / "step2.json").stat().st_mtime_ns == mtime


def test_recipe_stops_at_the_start_on_bad_input_when_not_skipping(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 3, "devel": 1, "test": 1})
    order = write_order(tmp_path)
    audio = corpus / "slurp_real"
    (audio / "audio-2.flac").write_bytes((audio / "audio-2.flac").read_bytes()[:-2000])
    with pytest.raises(BadAudioError, match=r"audio-2\.flac: decoding failed.*\(truncated\)"):
        main(tiny_argv(corpus, tmp_path / "r1", order, "seq_kd", "--skip_bad=false"))
    assert not (tmp_path / "r1" / "task1").exists()  # stopped before training
    (audio / "audio-5.flac").unlink()
    with pytest.raises(SlurpFormatError, match=r"train\.jsonl:6: missing audio .*audio-5\.flac"):
        main(tiny_argv(corpus, tmp_path / "r2", order, "seq_kd", "--skip_bad=false"))
    # a line that is not UTF-8: named by file and line
    shutil.copy(audio / "audio-0.flac", audio / "audio-5.flac")
    train = corpus / "dataset" / "slurp" / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"who is", b"wh\xe9 is")
    train.write_bytes(b"".join(lines))
    with pytest.raises(SlurpFormatError, match=r"train\.jsonl:4: not UTF-8"):
        main(tiny_argv(corpus, tmp_path / "r3", order, "seq_kd", "--skip_bad=false"))


# ------------------------------------------------------------------------------------------------ text and rows
def _jsonl_line(sentence: str, sid: int = 1, fname: str = "a.flac") -> str:
    toks = [{"surface": w} for w in sentence.split()]
    return json.dumps({"slurp_id": sid, "sentence": sentence, "scenario": "alarm", "action": "set", "tokens": toks,
                       "entities": [], "recordings": [{"file": fname}]})  # fmt: skip


def _slurp_dir(tmp_path: Path, jsonl: bytes) -> Path:
    d = tmp_path / "d"
    (d / "dataset" / "slurp").mkdir(parents=True)
    (d / "slurp_real").mkdir()
    _flac(d / "slurp_real" / "a.flac")
    _flac(d / "slurp_real" / "b.flac")
    (d / "dataset" / "slurp" / "train.jsonl").write_bytes(jsonl)
    return d


def test_malformed_jsonl_line_names_file_and_line_or_is_skipped(tmp_path):
    d = _slurp_dir(tmp_path, (_jsonl_line("wake me up") + '\n{"slurp_id": 2, "sent\n').encode())
    with pytest.raises(SlurpFormatError, match=r"train\.jsonl:2: malformed JSON"):
        prepare_slurp_with_report(d, tmp_path / "o1", splits=["train"])
    _, rep = prepare_slurp_with_report(d, tmp_path / "o2", splits=["train"], skip_bad=True)
    assert rep.rows == {"train": 1} and rep.skipped == {"train": {"malformed_json": 1}}


def test_empty_transcript_is_kept_with_an_empty_transcript(tmp_path):
    """Existing behaviour of slukd.data.slurp (not an error): the item trains on the intent alone and scores WER
    against an empty reference. See docs/reliability.md."""
    d = _slurp_dir(tmp_path, (_jsonl_line("") + "\n").encode())
    paths, rep = prepare_slurp_with_report(d, tmp_path / "o", splits=["train"])
    row = read_manifest(paths["train"])[0]
    assert rep.rows == {"train": 1} and row["transcript"] == "" and row["target"] == "alarm_set _SEP"


def test_non_utf8_jsonl_line_is_a_format_error_naming_the_line(tmp_path):
    raw = (_jsonl_line("wake me up") + "\n").encode() + _jsonl_line("caf\xe9", 2, "b.flac").encode("latin-1") + b"\n"
    raw = raw.replace(b"caf\\u00e9", b"caf\xe9")
    d = _slurp_dir(tmp_path, raw)
    with pytest.raises(SlurpFormatError, match=r"train\.jsonl:2"):
        prepare_slurp_with_report(d, tmp_path / "o", splits=["train"])


def test_malformed_manifest_rows_name_file_and_line(tmp_path):
    header = "ID,wav,duration,slurp_id,scenario,action,intent,transcript,entities,target\n"
    good = "x,$data_root/a.flac,1.0,1,alarm,set,alarm_set,hi,[],alarm_set _SEP hi\n"
    cases = {
        "short": good + "y,$data_root/b.flac,1.0\n",
        "json": good + 'y,$data_root/b.flac,1.0,1,alarm,set,alarm_set,hi,"[{bad",alarm_set _SEP hi\n',
        "number": good + "y,$data_root/b.flac,abc,1,alarm,set,alarm_set,hi,[],alarm_set _SEP hi\n",
    }
    for name, body in cases.items():
        p = tmp_path / f"{name}.csv"
        p.write_text(header + body)
        with pytest.raises(ManifestError, match=rf"{name}\.csv:3: "):
            read_manifest_checked(p)
    (tmp_path / "cols.csv").write_text("ID,wav\nx,y\n")
    with pytest.raises(ManifestError, match="missing columns"):
        read_manifest_checked(tmp_path / "cols.csv")
    (tmp_path / "ok.csv").write_text(header + good)
    assert read_manifest_checked(tmp_path / "ok.csv")[0]["entities"] == []


def test_slurp_read_manifest_names_file_and_line(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("ID,wav,duration,slurp_id,scenario,action,intent,transcript,entities,target\nx,w,abc,1,a\n")
    with pytest.raises(ValueError, match=r"m\.csv:2"):
        read_manifest(p)


# ------------------------------------------------------------------------------------------------ configuration
def test_unknown_override_is_a_readable_error():
    with pytest.raises(UnknownHparamError) as err:
        load_hparams(HP / "seq_kd.yaml", "d_modell: 3")
    msg = str(err.value)
    assert (
        msg.startswith("command-line override --d_modell: no hparam 'd_modell' in ") and "did you mean d_model" in msg
    )
    assert isinstance(err.value, KeyError)
    with pytest.raises(UnknownHparamError, match="--no_such_key: no hparam 'no_such_key'.*known keys: row, seed"):
        main([str(HP / "seq_kd.yaml"), "--no_such_key=1"])
    with pytest.raises(ValueError, match=r"command-line override --seed is given twice \('1' and '2'\); give it once"):
        main([str(HP / "seq_kd.yaml"), "--seed=1", "--seed=2"])


def test_unknown_key_in_a_row_file_names_the_row_file(tmp_path):
    row = tmp_path / "typo.yaml"
    row.write_text(f"base: {HP / 'base.yaml'}\nrow: typo\nseq_kd_wieght: 1.0\n")
    with pytest.raises(UnknownHparamError, match=rf"{row}: key 'seq_kd_wieght': .*did you mean seq_kd_weight"):
        load_hparams(row)
