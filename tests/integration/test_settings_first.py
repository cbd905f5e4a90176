"""Every setting is checked before any work: a run (or a sweep) with a bad setting stops with one line, exit status
2, and touches nothing: no corpus is deleted or rebuilt, no run folder is claimed, no run of a sweep starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slukd.data import synth_slu as S
from slukd.experiment import main_guard
from tests.conftest import REPO
from tests.helpers_slu import HP, recipe_module


def fake_tiny_corpus(folder: Path) -> Path:
    """The marker files of a finished built-in corpus of tier tiny, seed 0 (and one recording): what a training
    run reads before it would (before this fix) delete and re-synthesise a corpus of another tier."""
    (folder / "dataset" / "slurp").mkdir(parents=True)
    (folder / "slurp_real").mkdir()
    (folder / "slurp_real" / "synth-train-0-0.flac").write_bytes(b"not audio, never read")
    (folder / "dataset" / "slurp" / "train.jsonl").write_text('{"slurp_id": 0}\n')
    config = {"tier": "tiny", "seed": 0, "version": S.CORPUS_VERSION}
    (folder / S.MARKER).write_text(json.dumps({"config_hash": "0123456789abcdef", "config": config}))
    return folder


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def run_slu(argv: list[str], capsys) -> tuple[int, str]:
    rc = main_guard(recipe_module("slurp_incremental").main, argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, names",
    [
        ([], "--tier"),  # the case: a tiny corpus used without --tier tiny
        (["--tier=tiny", "--memory_per_class=8"], "memory_per_class (8) and memory_fraction (0.01)"),
        (["--tier=tiny", "--corpus_seed=3"], "--corpus_seed"),
        (["--tier=tiny", "--order=no_such_order.txt"], "--order"),
    ],
)
def test_a_run_with_a_bad_setting_touches_nothing(tmp_path, capsys, extra, names):
    corpus = fake_tiny_corpus(tmp_path / "slu_tiny")
    before = snapshot(corpus)
    out = tmp_path / "run"
    argv = [str(HP / "rehearsal_herding.yaml"), f"--data_folder={corpus}", f"--output_folder={out}",
            "--first_task_cache=null", "--noprogressbar", *extra]  # fmt: skip
    rc, err = run_slu(argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], err
    assert snapshot(corpus) == before  # the corpus was neither deleted nor rebuilt
    assert not out.exists()  # the run folder was not claimed


def test_tensorboard_without_the_package_is_refused_first(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    corpus = fake_tiny_corpus(tmp_path / "slu_tiny")
    out = tmp_path / "run"
    argv = [str(HP / "finetune.yaml"), f"--data_folder={corpus}", f"--output_folder={out}", "--tier=tiny",
            "--tensorboard=true"]  # fmt: skip
    rc, err = run_slu(argv, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "slukd[tensorboard]" in err
    assert not out.exists()


def test_hyphen_and_underscore_spellings_are_the_same_setting(tmp_path, capsys):
    corpus = fake_tiny_corpus(tmp_path / "slu_tiny")
    out = tmp_path / "run"
    argv = [str(HP / "rehearsal_herding.yaml"), f"--data-folder={corpus}", f"--output-folder={out}",
            "--memory-per-class=8", "--tier=tiny"]  # fmt: skip
    rc, err = run_slu(argv, capsys)
    assert rc == 2 and "memory_per_class (8)" in err and not out.exists()


def test_a_sweep_with_a_misspelled_key_starts_nothing(tmp_path):
    """``--set numbr_of_epochs=1``: every run's settings are checked before the first run; one line, exit 2."""
    out = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "slukd.cli", "sweep", "slu", "--rows", "finetune", "seq_kd", "--seeds", "0", "1",
           "--out", str(out), "--set", f"data_folder={tmp_path / 'data'}", "numbr_of_epochs=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "numbr_of_epochs" in lines[0] and "did you mean number_of_epochs" in lines[0]
    assert "4 of 4 runs refused" in lines[0]
    assert not out.exists() and not (tmp_path / "data").exists()


def test_a_run_stopped_by_its_data_before_any_work_releases_its_folder(tmp_path, capsys):
    """Bad data found after the run record was written (a malformed jsonl line, skip_bad false): the folder this
    run created holds no work, so it is removed and a later run with other settings may use it."""
    corpus = tmp_path / "slurp"
    (corpus / "dataset" / "slurp").mkdir(parents=True)
    (corpus / "slurp_real").mkdir()
    for split in ("train", "devel", "test"):
        (corpus / "dataset" / "slurp" / f"{split}.jsonl").write_text("{not json\n")
    out = tmp_path / "run"
    argv = [str(HP / "finetune.yaml"), "--corpus=slurp", f"--data_folder={corpus}", f"--output_folder={out}",
            "--skip_bad=false", "--first_task_cache=null", "--noprogressbar"]  # fmt: skip
    rc, err = run_slu(argv, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    # a folder that held something before is never removed
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, err = run_slu(argv, capsys)
    assert rc == 2 and (out / "notes.txt").read_text() == "mine"
