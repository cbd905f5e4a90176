"""Clotho / AudioCaps manifests (bad rows are skipped and counted) and the word vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from slukd.data.captions import (
    WordVocab,
    normalize_caption,
    prepare_audiocaps,
    prepare_clotho,
    read_manifest,
    read_prepare_report,
)


def _wav(path, seconds=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


def test_normalize_caption():
    assert normalize_caption("A Dog's bark, then RAIN!  ") == "a dog's bark then rain"
    assert normalize_caption("'quoted' words -- and 3 beeps.") == "quoted words and 3 beeps"


def test_clotho_with_bad_rows(tmp_path):
    data = tmp_path / "clotho"
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    for cname in ("development", "validation", "evaluation"):
        _wav(data / cname / "a.wav", 1.5)
        _wav(data / cname / "b.wav")
        rows = [
            "a.wav,One.,Two.,Three.,Four.,Five.",
            "missing.wav,x,y,z,u,v",  # no audio -> skipped
            ",x,y,z,u,v",  # no file name -> skipped
            "b.wav,,,,,",  # no caption -> skipped
        ]
        (data / f"clotho_captions_{cname}.csv").write_text(header + "\n".join(rows) + "\n")
    paths = prepare_clotho(data, tmp_path / "out")
    train = read_manifest(paths["train"])
    assert [r["ID"] for r in train] == ["train_a"]
    assert train[0]["captions"] == ["One.", "Two.", "Three.", "Four.", "Five."]
    assert train[0]["duration"] == pytest.approx(1.5)
    report = read_prepare_report(tmp_path / "out")
    per_split = {"missing_audio": 1, "empty_file_name": 1, "no_caption": 1}
    assert report["skipped"] == {"train": per_split, "valid": per_split, "test": per_split, "audio_only": {}}
    assert report["rows"] == {"train": 1, "valid": 1, "test": 1, "audio_only": 0}
    assert any("clotho_captions_development.csv:3" in e and "missing_audio" in e for e in report["examples"])
    on_disk = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert on_disk["report"] == report and set(on_disk["csv"]) == {"train", "valid", "test", "audio_only"}
    assert read_manifest(paths["audio_only"]) == []


def test_clotho_caption_count_and_duplicate_clips_are_counted(tmp_path, caplog):
    data = tmp_path / "clotho"
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    for cname in ("development", "validation", "evaluation"):
        for name in ("a.wav", "b.wav", "c.wav", "a.flac"):
            _wav(data / cname / name)
        rows = ["a.wav,1,2,3,4,5", "b.wav,1,2,3,4,5", "c.wav,only,four,captions,here,"]
        if cname == "development":
            rows += [
                "a.wav,1,2,3,4,5",  # exact repeat of line 2: kept once, counted
                "b.wav,1,2,3,4,other",  # same clip, other captions: the first is kept, counted
                "a.flac,1,2,3,4,5",  # another file under clip ID train_a
            ]
        (data / f"clotho_captions_{cname}.csv").write_text(header + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="slukd.data.captions"):
        paths = prepare_clotho(data, tmp_path / "out")
    train = read_manifest(paths["train"])
    assert [r["ID"] for r in train] == ["train_a", "train_b"]
    assert train[1]["captions"] == ["1", "2", "3", "4", "5"]
    report = read_prepare_report(tmp_path / "out")
    assert report["skipped"]["train"] == {"wrong_caption_count": 1, "duplicate_clip": 1, "conflicting_clip": 2}
    assert report["skipped"]["valid"] == report["skipped"]["test"] == {"wrong_caption_count": 1}
    dev = "clotho_captions_development.csv"
    assert f"{dev}:6: clip train_b (b.wav) was read at" in caplog.text and f"{dev}:3" in caplog.text
    assert f"{dev}:5: a.wav repeats" in caplog.text
    # any number of captions when asked
    paths = prepare_clotho(data, tmp_path / "any", n_captions=None)
    assert len(read_manifest(paths["valid"])) == 3
    assert "wrong_caption_count" not in read_prepare_report(tmp_path / "any")["skipped"]["valid"]
    # a header with fewer caption columns than required is an error naming the file
    (data / "clotho_captions_validation.csv").write_text("file_name,caption_1,caption_2\na.wav,x,y\n")
    with pytest.raises(ValueError, match="clotho_captions_validation.csv: expected columns"):
        prepare_clotho(data, tmp_path / "out2")


def test_clotho_bad_header_and_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_clotho(tmp_path / "nope", tmp_path / "out")
    data = tmp_path / "c"
    for cname in ("development", "validation", "evaluation"):
        (data / cname).mkdir(parents=True)
        (data / f"clotho_captions_{cname}.csv").write_text("name,text\nx,y\n")
    with pytest.raises(ValueError, match="clotho_captions_development.csv: expected columns"):
        prepare_clotho(data, tmp_path / "out")


def test_audiocaps_grouping_and_bad_rows(tmp_path):
    data = tmp_path / "ac"
    header = "audiocap_id,youtube_id,start_time,caption\n"
    for name in ("train", "val", "test"):
        _wav(data / name / "abc_30.wav")
        _wav(data / name / "Yxyz.flac")
        rows = [
            "1,abc,30,A dog barks.",
            "2,abc,30,A dog is barking.",
            "3,xyz,0,Rain falls.",
            "4,nope,10,No audio here.",  # skipped
            "5,xyz,0,",  # caption missing -> skipped
        ]
        (data / f"{name}.csv").write_text(header + "\n".join(rows) + "\n")
    paths = prepare_audiocaps(data, tmp_path / "out", captioned_fraction=0.5, seed=0)
    test = read_manifest(paths["test"])
    assert {r["ID"]: r["captions"] for r in test} == {
        "test_abc_30": ["A dog barks.", "A dog is barking."],
        "test_xyz_0": ["Rain falls."],
    }
    assert len(read_manifest(paths["train"])) == 1  # half of the two training clips keep captions
    pool = read_manifest(paths["audio_only"])
    assert len(pool) == 1 and pool[0]["captions"] == []
    report = read_prepare_report(tmp_path / "out")
    assert report["skipped"] == {s: {"missing_audio": 1, "no_caption": 1} for s in ("train", "valid", "test")} | {
        "audio_only": {}
    }
    (data / "val.csv").write_text("youtube_id,caption\nabc,x\n")
    with pytest.raises(ValueError, match="val.csv"):
        prepare_audiocaps(data, tmp_path / "out2")


def test_audiocaps_caption_counts_duplicates_and_unreadable_audio(tmp_path, caplog):
    data = tmp_path / "ac"
    header = "audiocap_id,youtube_id,start_time,caption\n"
    for name in ("train", "val", "test"):
        _wav(data / name / "abc_30.wav")
        _wav(data / name / "xyz_0.wav")
        (data / name / "bad_0.wav").write_bytes(b"not audio")
        rows = [
            "1,abc,30,A dog barks.",
            "2,xyz,0,Rain falls.",
            "3,xyz,0,Rain is falling.",
            "1,abc,30,A dog barks.",  # exact repeat of audiocap_id 1
            "2,xyz,0,Something else.",  # audiocap_id 2 with another caption
            "4,nope,0,No audio.",
            "5,nope,0,Still no audio.",  # the same missing clip: counted once
            "6,bad,0,Unreadable.",
            "7,,5,No youtube id.",
        ]
        (data / f"{name}.csv").write_text(header + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="slukd.data.captions"):
        paths = prepare_audiocaps(data, tmp_path / "out", captions_per_clip={"train": 1, "valid": 2, "test": 2})
    assert [r["ID"] for r in read_manifest(paths["train"])] == ["train_abc_30"]  # xyz has 2 captions, not 1
    assert {r["ID"]: r["captions"] for r in read_manifest(paths["test"])} == {
        "test_xyz_0": ["Rain falls.", "Rain is falling."]
    }
    common = {
        "duplicate_caption": 1,
        "conflicting_caption": 1,
        "missing_audio": 1,
        "unreadable_audio": 1,
        "missing_field": 1,
        "wrong_caption_count": 1,
    }
    # valid/test want 2 captions: the one-caption clips abc_30 and bad_0 are counted before their audio is read
    held_out = {k: v for k, v in common.items() if k != "unreadable_audio"} | {"wrong_caption_count": 2}
    assert read_prepare_report(tmp_path / "out")["skipped"] == {
        "train": common,
        "valid": held_out,
        "test": held_out,
        "audio_only": {},
    }
    assert "test.csv:6: audiocap_id 2 was read at" in caplog.text and "test.csv:3" in caplog.text
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        prepare_audiocaps(data, tmp_path / "out3", captions_per_clip={"dev": 5})


def test_word_vocab_roundtrip(tmp_path):
    vocab = WordVocab.build(["A dog barks.", "a dog runs", "Rain!"], max_words=3)
    assert vocab.itos[:6] == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "dog"]
    ids = vocab.encode("A dog barks loudly today")
    assert len(ids) == 4 and ids[-1] == vocab.eos_id  # capped at 3 words + eos
    assert vocab.decode(ids) == "a dog barks"
    assert vocab.decode([vocab.bos_id, vocab.stoi["rain"], vocab.eos_id, vocab.stoi["dog"]]) == "rain"
    assert vocab.encode("zebra", add_eos=False) == [vocab.unk_id]
    vocab.save(tmp_path / "v.json")
    again = WordVocab.load(tmp_path / "v.json")
    assert again.itos == vocab.itos and again.max_words == 3
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        WordVocab.load(tmp_path / "bad.json")


def test_clip_datasets_resample_downmix_choose_captions_and_name_bad_files(tmp_path):
    from speechbrain.dataio.batch import PaddedBatch

    from slukd.captioning.data import EpochClock, audio_dataset, caption_dataset, choose_caption
    from slukd.data.audio import AudioError
    from slukd.data.captions import WordVocab

    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 44100)
    sf.write(tmp_path / "b.flac", (np.sin(2 * np.pi * 220 * np.arange(8000) / 16000) * 0.3).astype(np.float32), 16000)
    rows = [
        {"ID": "a", "wav": str(tmp_path / "a.wav"), "duration": 1.0, "captions": ["a dog barks", "a loud dog"]},
        {"ID": "b", "wav": str(tmp_path / "b.flac"), "duration": 0.5, "captions": ["rain falls"]},
    ]
    vocab = WordVocab.build([c for r in rows for c in r["captions"]])
    clock = EpochClock(seed=3)
    ds = caption_dataset(rows, vocab, clock)
    batch = PaddedBatch([ds[0], ds[1]])
    assert batch.sig.data.shape == (2, 16000)  # 1 s at 44.1 kHz -> 16,000 samples, mono
    assert batch.sig.lengths.tolist() == [1.0, 0.5]
    for epoch in range(4):  # the target is the epoch's chosen reference, a function of (seed, epoch, clip)
        clock.epoch = epoch
        item = ds[0]
        cap = choose_caption("a", rows[0]["captions"], 3, epoch)
        assert item["tokens"].tolist() == vocab.encode(cap, add_eos=False)
        assert item["tokens_bos"][0] == vocab.bos_id and item["tokens_eos"][-1] == vocab.eos_id
    assert {choose_caption("a", rows[0]["captions"], 3, e) for e in range(20)} == set(rows[0]["captions"])
    (tmp_path / "c.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="c.wav"):
        audio_dataset([{"ID": "c", "wav": str(tmp_path / "c.wav"), "duration": 1.0, "captions": []}])[0]
    with pytest.raises(ValueError, match="clip b has no caption"):
        choose_caption("b", [], 0, 0)
