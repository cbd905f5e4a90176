"""The main job's entry point (``make demo`` runs ``python -m slukd.demo``) on the tiny tier, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def _demo(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "slukd.demo", "--rows", "finetune,seq_kd", "--seeds", "0", "--quiet"]
    cmd += ["--out", str(tmp_path / "res"), "--data", str(tmp_path / "data"), *extra]
    cmd += ["--set", "demo_tier=tiny", "number_of_epochs=1", "later_task_epochs=1", "memory_per_class=2"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_demo_runs_rows_in_parallel_prints_the_table_and_resumes(tmp_path):
    proc = _demo(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| finetune | 1 |" in proc.stdout and "| seq_kd | 1 |" in proc.stdout
    assert "2 run(s) at a time" in proc.stdout
    table = (tmp_path / "res" / "table.md").read_text()
    assert "finetune" in table and "seq_kd" in table
    for row in ("finetune", "seq_kd"):
        run = tmp_path / "res" / row / "seed0"
        steps = sorted((run / "results").glob("step*.json"))
        assert [p.name for p in steps] == ["step1.json", "step2.json", "step3.json"]
        assert json.loads(steps[-1].read_text())["row"] == row
    before = (tmp_path / "res" / "seq_kd" / "seed0" / "results" / "step3.json").read_bytes()
    again = _demo(tmp_path, "--jobs", "1")  # a rerun finds finished runs and only prints the table
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "res" / "seq_kd" / "seed0" / "results" / "step3.json").read_bytes() == before

    def table_of(out: str) -> str:
        return out.split("| method |", 1)[1].split("wall time", 1)[0]

    assert table_of(again.stdout) == table_of(proc.stdout)
