"""slukd.sweep.run_local: exit codes, a run whose dependency failed is not started, progress in the log, finished
tasks' resume checkpoints removed, no run started on a nearly full disk."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from slukd.sweep import Run, run_local


@dataclass
class _Fake(Run):
    code: int = 0

    def command(self, task: int | None = None) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit({self.code})"]

    def finished(self, check_data: bool = True) -> bool:
        return False


def test_statuses_dependencies_and_progress(tmp_path, caplog):
    def fake(name, code, after=()):
        out = tmp_path / name
        out.mkdir()
        return _Fake(name, "r.py", Path("row.yaml"), out, after=list(after), code=code)

    plan = [fake("ok", 0), fake("bad", 3), fake("needs_bad", 0, after=["bad"])]
    with caplog.at_level(logging.INFO, logger="slukd.sweep"):
        status = run_local(plan, jobs=2, threads=1)
    assert status == {"ok": 0, "bad": 3, "needs_bad": -1}
    text = caplog.text
    assert "bad FAILED (exit 3)" in text and "needs_bad not started" in text
    assert text.count("runs settled)") == 2 and "of 3 runs settled)" in text


def _slu_run(tmp_path: Path, name: str, tasks_done: int, tasks: int = 3) -> _Fake:
    """A fake SLU run folder: ``tasks`` tasks with epoch checkpoints, the first ``tasks_done`` marked DONE."""
    out = tmp_path / name
    for k in range(1, tasks + 1):
        save = out / f"task{k}" / "save" / "CKPT+1"
        save.mkdir(parents=True)
        (save / "model.ckpt").write_bytes(b"x" * 1000)
        (out / f"task{k}" / "best_model.ckpt").write_bytes(b"best")
        if k <= tasks_done:
            (out / f"task{k}" / "DONE").write_text("done\n")
    return _Fake(name, "slu", Path("row.yaml"), out)


def test_finished_tasks_lose_their_resume_checkpoints_and_keep_the_best_model(tmp_path, caplog):
    run = _slu_run(tmp_path, "a", tasks_done=2)
    assert run.prune_resume_checkpoints() == 2000
    assert not (run.out / "task1" / "save").exists() and not (run.out / "task2" / "save").exists()
    assert (run.out / "task3" / "save" / "CKPT+1" / "model.ckpt").is_file()  # unfinished: its resume point stays
    assert all((run.out / f"task{k}" / "best_model.ckpt").read_bytes() == b"best" for k in (1, 2, 3))
    cap = _Fake("c", "captioning", Path("row.yaml"), tmp_path / "c")
    (cap.out / "save" / "CKPT+1").mkdir(parents=True)
    (cap.out / "save" / "CKPT+1" / "model.ckpt").write_bytes(b"x" * 10)
    (cap.out / "model.ckpt").write_bytes(b"best")
    assert cap.prune_resume_checkpoints() == 0 and (cap.out / "save").is_dir()  # not finished: it may resume
    (cap.out / "results.json").write_text("{}")
    assert cap.prune_resume_checkpoints() == 10 and not (cap.out / "save").exists()
    assert (cap.out / "model.ckpt").read_bytes() == b"best"
    # in a sweep: pruned when the run succeeds, kept with keep_checkpoints
    pruned, kept = _slu_run(tmp_path, "p", tasks_done=3), _slu_run(tmp_path, "k", tasks_done=3)
    with caplog.at_level(logging.INFO, logger="slukd.sweep"):
        assert run_local([pruned], jobs=1, threads=1) == {"p": 0}
        assert run_local([kept], jobs=1, threads=1, keep_checkpoints=True) == {"k": 0}
    assert not list(pruned.out.glob("task*/save")) and len(list(kept.out.glob("task*/save"))) == 3
    assert "p: epoch checkpoints removed" in caplog.text


def test_no_run_starts_below_the_free_space_floor(tmp_path, monkeypatch):
    from slukd import sweep

    monkeypatch.setattr(sweep, "free_gb", lambda folder: 1.5)
    plan = [_Fake(n, "r.py", Path("row.yaml"), tmp_path / n) for n in ("a", "b")]
    for r in plan:
        r.out.mkdir()
    with pytest.raises(sweep.DiskFull, match=r"1\.5 GB free, below --min_free_gb 2: 2 run\(s\) not started"):
        run_local(plan, jobs=2, threads=1, min_free_gb=2.0)
    assert run_local(plan, jobs=2, threads=1, min_free_gb=1.0) == {"a": 0, "b": 0}
    assert sweep.free_gb(tmp_path / "not" / "made") > 0  # the nearest existing parent's disk
