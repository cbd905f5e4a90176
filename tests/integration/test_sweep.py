"""The sweep driver and the main job: plans (order, dependencies, layout), local runs in parallel with the
shared first task, resumption, the report; submitit's local executor with one job per task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slukd.sweep import plan_captioning, plan_slu, run_submitit
from tests.conftest import REPO  # noqa: E402
from tests.helpers_slu import TINY, make_corpus, write_order


def test_slu_plan_orders_first_task_producers_first_and_joint_once(tmp_path):
    plan = plan_slu(["joint", "finetune", "seq_kd"], [0, 1], ["slurp3", "slurp6"], tmp_path, ["--lr=0.01"])
    names = [r.name for r in plan]
    assert names[:4] == ["slurp3/finetune/seed0", "slurp6/finetune/seed0", "slurp3/finetune/seed1",
                         "slurp6/finetune/seed1"]  # fmt: skip
    assert names.count("joint/seed0") == 1 and len(names) == 2 * (1 + 2 * 2)
    run = next(r for r in plan if r.name == "slurp6/seq_kd/seed1")
    assert run.out == tmp_path / "slurp6/seq_kd/seed1" and run.n_tasks == 6
    cmd = run.command(task=2)
    assert cmd[2].endswith("seq_kd.yaml") and "--seed=1" in cmd and "--split=slurp6" in cmd and "--lr=0.01" in cmd
    assert cmd[-2:] == [f"--output_folder={run.out}", "--task=2"] and not run.finished()


def test_captioning_plan_runs_the_teacher_first_and_students_after_it(tmp_path):
    plan = plan_captioning(["teacher", "student_supervised", "student_seqkd"], [0, 1], tmp_path, [], teacher_seed=0)
    assert plan[0].name == "seed0/teacher" and not plan[0].after
    students = plan[1:]
    assert len(students) == 4 and all(r.after == ["seed0/teacher"] for r in students)
    assert all(f"--teacher_folder={tmp_path / 'seed0/teacher'}" in r.args for r in students)


def _demo(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "slukd.cli", "demo", "--rows", "finetune", "seq_kd", "--seeds", "0",
           "--noprogressbar", "--out", str(tmp_path / "res"), "--data", str(tmp_path / "data"), *extra,
           "--set", "tier=tiny", "number_of_epochs=1", "later_task_epochs=1"]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_demo_runs_rows_in_parallel_shares_task_1_prints_the_table_and_resumes(tmp_path):
    proc = _demo(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| finetune | 1 |" in proc.stdout and "| seq_kd | 1 |" in proc.stdout
    assert "2 run(s) at a time" in proc.stdout
    table = (tmp_path / "res" / "slurp3" / "table_continual.md").read_text()
    assert "finetune" in table and "seq_kd" in table
    reused = []
    for row in ("finetune", "seq_kd"):
        run = tmp_path / "res" / "slurp3" / row / "seed0"
        steps = sorted((run / "results").glob("step*.json"))
        assert [p.name for p in steps] == ["step1.json", "step2.json", "step3.json"]
        step1 = json.loads(steps[0].read_text())
        assert step1["row"] == row
        reused.append(step1["first_task"]["reused"])
    assert sorted(reused) == [False, True]  # one row trained task 1, the other took it from the cache
    before = (tmp_path / "res" / "slurp3" / "seq_kd" / "seed0" / "results" / "step3.json").read_bytes()
    again = _demo(tmp_path, "--jobs", "1")  # a rerun finds finished runs and only prints the table
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "res" / "slurp3" / "seq_kd" / "seed0" / "results" / "step3.json").read_bytes() == before

    def table_of(out: str) -> str:
        return out.split("| method |", 1)[1].split("Left out", 1)[0].split("total wall", 1)[0]

    assert table_of(again.stdout) == table_of(proc.stdout)


@pytest.mark.slow
def test_submitit_local_executor_chains_the_tasks_of_a_run(tmp_path):
    pytest.importorskip("submitit")
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    order = write_order(tmp_path)
    args = [f"--data_folder={corpus}", f"--order={order}", *TINY]
    plan = plan_slu(["seq_kd"], [0], ["slurp3"], tmp_path / "res", args)
    plan[0].n_tasks = 2  # the order file has two tasks
    status = run_submitit(plan, tmp_path / "submitit", cluster="local", per_task=True, threads=1,
                          params={"timeout_min": 10})  # fmt: skip
    assert status == {"slurp3/seq_kd/seed0": 0} and plan[0].finished()
    logs = sorted(p.name for p in (tmp_path / "submitit").glob("*_log.out"))
    assert len(logs) == 2  # one job per task
