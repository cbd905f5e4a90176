"""Scale out: ``torchrun --nproc_per_node=2`` of the SLU recipe on the CPU (gloo) runs to completion, with one
report written by rank 0 and the same run-folder structure as a one-process run (about 20 s: two processes that
each import torch and SpeechBrain, plus a one-process run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slukd.utils.run import IncompatibleRunError
from tests.conftest import REPO
from tests.helpers_slu import RECIPE, main, make_corpus, tiny_argv, write_order


def _structure(run: Path) -> dict[str, object]:
    """File names (logs, checkpoints and temporary files aside), step-result keys and prediction counts."""
    skip = ("save/", "log.", "targets/")
    files = sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and not any(s in str(p.relative_to(run)) for s in skip)
    )
    steps = {}
    for p in sorted((run / "results").glob("step*.json")):
        d = json.loads(p.read_text())
        steps[p.name] = (sorted(d), [sorted(t) for t in d["per_task"]], d["seen"]["n"])
    preds = {str(p.relative_to(run)): len(p.read_text().splitlines()) for p in run.glob("task*/predictions.jsonl")}
    return {"files": files, "steps": steps, "preds": preds}


def test_torchrun_two_cpu_processes_gloo(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 3, "devel": 1, "test": 1})
    order = write_order(tmp_path)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SLUKD_DIE_AT", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(RECIPE),
           *tiny_argv(corpus, ddp, order, "seq_kd")]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert main(tiny_argv(corpus, single, order, "seq_kd")) == 0
    # one report, by rank 0; rank 1 logged into its own file and never evaluated or wrote results
    assert _structure(ddp) == _structure(single)
    assert (ddp / "report.csv").read_text().count("\n") == 2
    main_log, rank1_log = (ddp / "log.txt").read_text(), (ddp / "log.rank1.txt").read_text()
    assert main_log.count("slukd.slu.strategy: after task") == 2 and "after task" not in rank1_log
    assert main_log.count("teacher targets: 4 computed") == 1 and "teacher targets: 4 computed" not in rank1_log
    assert "epoch 1" in rank1_log  # rank 1 did train
    assert json.loads((ddp / "run_info.json").read_text())["identity"]["world_size"] == 2
    # resuming a two-process run folder with one process would mix runs: refused
    with pytest.raises(IncompatibleRunError, match="world_size"):
        main(tiny_argv(corpus, ddp, order, "seq_kd"))


def test_captioning_under_torchrun_two_cpu_processes(tmp_path):
    """The captioning recipe on SpeechBrain DDP (gloo): a teacher, then a student with seq + contrastive KD and
    audio-only batches (its DDP-wrapped KD head and the two backward passes per step), 2 processes each."""
    from tests.integration.test_captioning_recipe import cap_argv

    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SLUKD_DIE_AT", None)
    recipe = str(REPO / "recipes" / "captioning_kd.py")
    for row, out in (("teacher", "teacher"), ("student_seqkd_contrastive_audio", "student")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", recipe,
               *cap_argv(row, tmp_path, out, "--number_of_epochs=2")]  # fmt: skip
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
        results = json.loads((tmp_path / out / "results.json").read_text())
        assert results["test"]["n"] == 8
        assert json.loads((tmp_path / out / "run_info.json").read_text())["identity"]["world_size"] == 2
    log = (tmp_path / "student" / "train_log.txt").read_text()
    assert log.count("epoch:") == 2 and "train ao_enc:" in log  # one train log (rank 0), audio-only KD ran
    assert (tmp_path / "student" / "log.rank1.txt").is_file()
