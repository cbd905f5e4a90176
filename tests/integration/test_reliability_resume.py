"""Reliability of the SLU recipe: kill -9 at several points + rerun == uninterrupted run; determinism; atomic,
never-duplicated results.

The kills use the loop's fault-injection hook (``SLUKD_DIE_AT=<phase>:<task>:<n>``, see slukd.utils.faults), so
each lands at a known point: mid-training of task 1 and task 2 (after an end-of-epoch checkpoint), during test
decoding, between the step result and the memory update, during the teacher targets (seq-KD pseudo-labels) and
while the report is being written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from slukd.utils.faults import maybe_die
from tests.helpers_slu import RECIPE, comparable_results, main, make_corpus, tiny_argv, write_order

#: 3 epochs per task, small evaluation batches (several test / pseudo-label batches to die in)
RESUME_ARGS = ("--number_of_epochs=3", "--eval_batch_size=2")


def _run(argv: list[str], die_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("SLUKD_DIE_AT", None)
    if die_at:
        env["SLUKD_DIE_AT"] = die_at
    return subprocess.run([sys.executable, str(RECIPE), *argv], env=env, capture_output=True, text=True, timeout=600)


def test_maybe_die_matches_only_its_point(monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.delenv("SLUKD_DIE_AT", raising=False)
    maybe_die("train", 2, 3)
    monkeypatch.setenv("SLUKD_DIE_AT", "train:2:3")
    for args in (("eval", 2, 3), ("train", 1, 3), ("train", 2, 2)):
        maybe_die(*args)
    assert killed == []
    maybe_die("train", 2, 3)
    monkeypatch.setenv("SLUKD_DIE_AT", "report::2")
    maybe_die("report", None, 1)
    maybe_die("report", None, 2)
    assert killed == [signal.SIGKILL, signal.SIGKILL]


@pytest.mark.slow
def test_sigkill_at_every_phase_then_rerun_equals_uninterrupted(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 3, "devel": 1, "test": 2})
    order = write_order(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    done = _run(tiny_argv(corpus, a, order, "seq_kd", *RESUME_ARGS))
    assert done.returncode == 0, done.stderr[-3000:]
    # one folder, killed once at each point in the order they occur, rerun with the same command each time
    points = ["train:1:3", "eval:1:1", "memory:1", "targets:2:1", "train:2:4", "eval:2:2", "memory:2", "report::2"]
    for point in points:
        res = _run(tiny_argv(corpus, b, order, "seq_kd", *RESUME_ARGS), die_at=point)
        assert res.returncode == -signal.SIGKILL, f"{point}: not killed (rc {res.returncode})\n{res.stderr[-3000:]}"
        assert f"SLUKD_DIE_AT={point}" in res.stderr, point
    # the report was cut after its first file: report.csv is there, report.md is not yet
    assert (b / "report.csv").is_file() and not (b / "report.md").exists()
    res = _run(tiny_argv(corpus, b, order, "seq_kd", *RESUME_ARGS))
    assert res.returncode == 0, res.stderr[-3000:]
    ra, rb = comparable_results(a), comparable_results(b)
    assert set(ra) == set(rb) and len(ra) >= 8
    for key in ra:
        assert ra[key] == rb[key], key
    # nothing half-written is left, and each epoch is in the train logs once
    assert not list(b.rglob(".*.tmp")) and not list(b.rglob("*.tmp"))
    for t in (1, 2):
        lines = [ln for ln in (b / f"task{t}" / "train_log.txt").read_text().splitlines() if ln.strip()]
        assert [ln.split("epoch: ")[1].split(",")[0] for ln in lines] == ["1", "2", "3"], lines
    # the killed run's log shows every kill and the resumptions
    log = (b / "log.txt").read_text()
    assert log.count("killing this process") == len(points)
    assert "already done" in log


def test_two_runs_same_seed_identical_and_rerun_is_a_no_op(tmp_path):
    """Determinism on the CPU: two fresh runs with the same seed give identical results and predictions; a rerun
    of a finished run changes nothing and duplicates no line."""
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    order = write_order(tmp_path)
    for name in ("a", "b"):
        assert main(tiny_argv(corpus, tmp_path / name, order, "seq_kd")) == 0
    ra, rb = comparable_results(tmp_path / "a"), comparable_results(tmp_path / "b")
    assert ra == rb and "results/step2.json" in ra and "task2/predictions.jsonl" in ra
    # another seed does change something (the comparison is not vacuous)
    assert main(tiny_argv(corpus, tmp_path / "s1", order, "seq_kd", "--seed=1")) == 0
    assert comparable_results(tmp_path / "s1") != ra
    # rerun: no-op, same bytes, no duplicated prediction lines or train-log lines
    before = {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file() and p.suffix in {".json", ".csv"}}
    assert main(tiny_argv(corpus, tmp_path / "a", order, "seq_kd")) == 0
    after = {p: p.read_bytes() for p in before}
    changed = sorted(str(p.relative_to(tmp_path)) for p in before if before[p] != after[p])
    assert changed == [], changed
    assert comparable_results(tmp_path / "a") == ra
    preds = (tmp_path / "a" / "task2" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == len({json.loads(p)["id"] for p in preds}) == 4
    info = json.loads((tmp_path / "a" / "run_info.json").read_text())
    assert "recipes/slurp_incremental.py" in info["command"] and info["identity"]["world_size"] == 1
    assert "git_commit" in info["code_version"] or "slukd" in info["code_version"]
    assert (tmp_path / "a" / "hparams_resolved.yaml").read_text().count("seq_kd_weight: 1.0") == 1
