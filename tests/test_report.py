"""Run reports: matrices, Avg/Last/BWT/forgetting, aggregation over seeds (mean ± std), the CLI, bad files."""

from __future__ import annotations

import json
import math

import pytest

from slukd.report import (
    ReportError,
    aggregate,
    backward_transfer,
    cli_main,
    forgetting,
    format_table,
    report_runs,
    summarise_run,
    write_run_report,
)


def _make_run(root, row, seed, acc_matrix, seen_acc, wer=0.2, f1=0.5):
    run = root / row / f"seed{seed}"
    (run / "results").mkdir(parents=True)
    (run / "run_info.json").write_text(json.dumps({"identity": {"row": row, "seed": seed}}), encoding="utf-8")
    n = len(acc_matrix)
    for i, row_acc in enumerate(acc_matrix):
        per_task = [
            {"task": j + 1, "n": 10, "intent_acc": a, "wer": wer, "slu_f1": f1} for j, a in enumerate(row_acc[: i + 1])
        ]
        step = {
            "step": i + 1,
            "n_steps": n,
            "per_task": per_task,
            "seen": {"n": 10 * (i + 1), "intent_acc": seen_acc[i], "wer": wer, "slu_f1": f1},
            "wall_s": 10.0,
            "peak_rss_mb": 100.0,
        }
        (run / "results" / f"step{i + 1}.json").write_text(json.dumps(step), encoding="utf-8")
    return run


def test_bwt_and_forgetting_hand_case():
    r = [[0.9, None, None], [0.5, 0.8, None], [0.3, 0.6, 0.7]]
    # BWT = ((0.3-0.9) + (0.6-0.8)) / 2 = -0.4 ; forgetting = ((0.9-0.3) + (0.8-0.6)) / 2 = 0.4
    assert backward_transfer(r) == pytest.approx(-0.4)
    assert forgetting(r) == pytest.approx(0.4)
    assert math.isnan(backward_transfer([[0.5]]))


def test_summary_of_one_run(tmp_path):
    run = _make_run(tmp_path, "finetune", 0, [[0.9], [0.1, 0.8]], [0.9, 0.45])
    s = write_run_report(run)
    assert s["avg_acc"] == pytest.approx(0.675)
    assert s["last_acc"] == pytest.approx(0.45)
    assert s["first_task_acc"] == pytest.approx(0.9)
    assert s["bwt"] == pytest.approx(-0.8)
    assert s["complete"]
    for name in ("report.csv", "report.md", "matrix_intent_acc.csv", "acc_per_step.png", "acc_matrix.png"):
        assert (run / name).is_file()
    assert (run / "matrix_intent_acc.csv").read_text().splitlines() == ["step,task1,task2", "1,0.9,", "2,0.1,0.8"]
    # rewriting overwrites, never appends
    write_run_report(run)
    assert len((run / "report.csv").read_text().splitlines()) == 2


def test_aggregate_mean_and_std_over_seeds(tmp_path):
    runs = [
        _make_run(tmp_path, "rehearsal_random", 0, [[0.8], [0.6, 0.7]], [0.8, 0.6]),
        _make_run(tmp_path, "rehearsal_random", 1, [[0.6], [0.4, 0.5]], [0.6, 0.4]),
        _make_run(tmp_path, "joint", 0, [[0.95]], [0.95]),
    ]
    rows = aggregate([summarise_run(r) for r in runs])
    assert [r["row"] for r in rows] == ["joint", "rehearsal_random"]  # paper order
    reh = rows[1]
    assert reh["n"] == 2
    m, sd = reh["avg_acc"]  # per-run Avg Acc 0.7 and 0.5
    assert m == pytest.approx(0.6) and sd == pytest.approx(math.sqrt(0.02))
    assert reh["last_acc"][0] == pytest.approx(0.5)
    assert math.isnan(rows[0]["bwt"][0])  # joint: a single step, no BWT
    table = format_table(rows)
    assert "| rehearsal_random | 2 | 60.00 ± 14.14 |" in table
    assert "| joint | 1 | 95.00 |" in table


def test_cli_over_parent_folder(tmp_path, capsys):
    _make_run(tmp_path, "finetune", 0, [[0.9], [0.1, 0.8]], [0.9, 0.45])
    _make_run(tmp_path, "finetune", 1, [[0.7], [0.1, 0.6]], [0.7, 0.35])
    assert cli_main([str(tmp_path), "--out", str(tmp_path / "agg")], prog="slukd report") == 0
    out = capsys.readouterr().out
    assert "| finetune | 2 | 60.00 ± 10.61 | 40.00 ± 7.07 |" in out
    assert (tmp_path / "agg" / "table.csv").is_file()


def test_bad_step_file_is_named(tmp_path):
    run = _make_run(tmp_path, "finetune", 0, [[0.9]], [0.9])
    (run / "results" / "step1.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match=r"step1.json: unreadable"):
        summarise_run(run)
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    with pytest.raises(ReportError, match="no results"):
        summarise_run(empty)


def test_run_without_a_finished_task_is_left_out(tmp_path, caplog):
    _make_run(tmp_path, "finetune", 0, [[0.9], [0.2, 0.8]], [0.9, 0.5])
    started = tmp_path / "seq_kd" / "seed0"
    started.mkdir(parents=True)
    (started / "run_info.json").write_text("{}")
    table = report_runs([tmp_path])
    assert "finetune" in table and "seq_kd" not in table
    assert "1 run(s) without a finished task left out" in caplog.text
    with pytest.raises(ReportError, match="no run with a finished task"):
        report_runs([started])
