"""Provenance of a step result: data digest, code record, and the data digest joining the run identity."""

from __future__ import annotations

import json
import os

import pytest

from slukd.data.fingerprint import FINGERPRINT_NAME, fingerprint
from slukd.utils.provenance import CAPTIONING_CODE, code_record, data_digest, record_data_identity
from slukd.utils.run import IncompatibleRunError, record_run
from tests.helpers_slu import RECIPE


def _corpus(root):
    (root / "dataset").mkdir(parents=True)
    (root / "audio").mkdir()
    (root / "dataset" / "train.jsonl").write_text('{"a": 1}\n', encoding="utf-8")
    for i in range(2):
        (root / "audio" / f"{i}.flac").write_bytes(b"x" * (10 + i))
    return root


def _fp(run, corpus):
    files = [corpus / "dataset" / "train.jsonl"], [str(p) for p in sorted((corpus / "audio").iterdir())]
    (run / FINGERPRINT_NAME).write_text(json.dumps(fingerprint(*files)), encoding="utf-8")
    return data_digest(run)


def test_data_digest_follows_the_files_not_the_path_spelling(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    run.mkdir()
    assert data_digest(run) is None  # no fingerprint yet
    absolute = _fp(run, corpus)
    monkeypatch.chdir(tmp_path)
    assert _fp(run, corpus.relative_to(tmp_path)) == absolute  # relative data_folder: same digest
    meta = corpus / "dataset" / "train.jsonl"
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 10**9))
    assert _fp(run, corpus) == absolute  # a metadata file touched but not changed
    audio = corpus / "audio" / "0.flac"
    audio.write_bytes(audio.read_bytes())
    os.utime(audio, ns=(audio.stat().st_atime_ns, audio.stat().st_mtime_ns + 10**9))
    assert _fp(run, corpus) != absolute  # re-synthesised audio: new modification time


def test_code_record_names_result_affecting_files():
    rec = code_record([RECIPE])
    files = rec["files"]
    assert "continual/memory.py" in files and "recipe:slurp_incremental.py" in files
    assert not any(f.startswith(("report/", "cli.py", "captioning/")) for f in files)
    assert len(rec["fingerprint"]) == 16 and rec["torch"] and rec["speechbrain"]
    # the captioning record counts its own modules in, and the SLU part stays the same files
    cap = code_record([RECIPE], include=CAPTIONING_CODE)["files"]
    assert "captioning/brain.py" in cap and "models/paper_caption.py" in cap and "metrics/caption.py" in cap
    assert set(files) < set(cap) and not any(f.startswith(("report/", "cli.py")) for f in cap)


def test_the_data_digest_joins_the_identity_without_refusing_a_rerun(tmp_path):
    run = tmp_path / "run"
    identity = {"row": "finetune", "seed": 0, "settings": {"lr": 0.1}}
    record_run(run, "lr: 0.1\n", identity)
    (run / FINGERPRINT_NAME).write_text(json.dumps({"sources": {}, "audio": {"a.flac": [1, 2]}}), encoding="utf-8")
    digest = record_data_identity(run)
    assert json.loads((run / "run_info.json").read_text())["identity"]["data"] == digest
    record_run(run, "lr: 0.1\n", identity)  # the rerun records its identity before the data is prepared: accepted
    with pytest.raises(IncompatibleRunError, match="lr: 0.1 -> 0.2"):
        record_run(run, "lr: 0.2\n", {**identity, "settings": {"lr": 0.2}})
