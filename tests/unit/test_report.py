"""Run reports: matrices, Avg/Last/BWT/forgetting, aggregation over seeds (mean ± std), the CLI, bad files."""

from __future__ import annotations

import json
import math

import pytest

from slukd.report import (
    ReportError,
    backward_transfer,
    cli_main,
    forgetting,
    format_table,
    report_runs,
    summarise_run,
    write_run_report,
)


def _make_run(root, row, seed, acc_matrix, seen_acc, wer=0.2, f1=0.5, settings=None, shortened=False, extra=None):
    run = root / row / f"seed{seed}"
    (run / "results").mkdir(parents=True)
    identity = {"row": row, "seed": seed, "settings": {"row": row, "seed": seed, "lr": 0.001, **(settings or {})},
                "world_size": 1, "shortened": shortened}  # fmt: skip
    (run / "run_info.json").write_text(json.dumps({"identity": identity}), encoding="utf-8")
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
            **((extra or {}).get(i + 1, {})),
        }
        (run / "results" / f"step{i + 1}.json").write_text(json.dumps(step), encoding="utf-8")
    return run


def _caption_run(root, row, seed, cider, role="student", teacher=None, settings=None, code=None):
    run = root / f"seed{seed}" / row
    run.mkdir(parents=True)
    identity = {"row": row, "seed": seed, "settings": {"row": row, "seed": seed, "teacher_folder": str(teacher),
                                                        **(settings or {})}}  # fmt: skip
    (run / "run_info.json").write_text(json.dumps({"identity": identity}))
    r = {"row": row, "role": role, "seed": seed, "teacher": None if teacher is None else str(teacher),
         "params": 2_000_000, "train_minutes": 3.0,
         "test": {"BLEU_4": 0.4, "METEOR": 0.3, "ROUGE_L": 0.5, "CIDEr_D": cider, "tokenizer": "simple"}}  # fmt: skip
    if code is not None:
        r["code"] = code
    (run / "results.json").write_text(json.dumps(r))
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
    # one unit (percent) in every CSV
    assert (run / "matrix_intent_acc.csv").read_text().splitlines() == ["step,task1_pct,task2_pct", "1,90.0,",
                                                                        "2,10.0,80.0"]  # fmt: skip
    header, values = (run / "report.csv").read_text().splitlines()
    row = dict(zip(header.split(","), values.split(",")))
    assert float(row["avg_acc_pct"]) == pytest.approx(67.5) and float(row["last_wer_pct"]) == pytest.approx(20.0)
    # rewriting overwrites, never appends
    write_run_report(run)
    assert len((run / "report.csv").read_text().splitlines()) == 2


def test_reports_say_how_checkpoints_were_selected_and_what_was_skipped(tmp_path):
    from slukd.report.table import report_runs

    run = _make_run(tmp_path, "seq_kd", 0, [[0.9], [0.1, 0.8]], [0.9, 0.45])
    step = json.loads((run / "results" / "step2.json").read_text())
    step["valid_scope"] = "current"
    step["data"] = {"audio_skipped": {"train": {"unreadable": 2}, "test": {"missing": 1}},
                    "test_intents_without_token": {"alarm_wake": 3}}  # fmt: skip
    for k in (1, 2):
        (run / "results" / f"step{k}.json").write_text(
            json.dumps({**step, "step": k, "per_task": step["per_task"][:k]})
        )
    s = write_run_report(run)
    assert s["skipped"] == {"audio_skipped/train/unreadable": 2, "audio_skipped/test/missing": 1,
                            "test_intents_without_token": 3}  # fmt: skip
    md = (run / "report.md").read_text()
    assert "Checkpoint selection: current (the current task's devel items only)" in md
    assert "Items skipped or not scorable: 6 (audio_skipped/test/missing: 1" in md
    _make_run(tmp_path, "finetune", 0, [[0.9], [0.1, 0.8]], [0.9, 0.45])  # no valid_scope recorded
    table = report_runs([tmp_path])
    assert "Checkpoint selection differs between rows" in table and "seq_kd: current" in table
    assert "Items skipped or not scorable: seq_kd 6" in table


def _rows(tmp_path):
    from slukd.report.table import aggregate, find_runs, group_runs, summarise

    groups, left = group_runs([summarise(r) for r in find_runs([tmp_path])])
    return aggregate(groups), left


def test_aggregate_mean_and_std_over_seeds_in_percent(tmp_path):
    _make_run(tmp_path, "rehearsal_random", 0, [[0.8], [0.6, 0.7]], [0.8, 0.6])
    _make_run(tmp_path, "rehearsal_random", 1, [[0.6], [0.4, 0.5]], [0.6, 0.4])
    _make_run(tmp_path, "joint", 0, [[0.95]], [0.95])
    rows, left = _rows(tmp_path)
    assert [r["row"] for r in rows] == ["joint", "rehearsal_random"] and not left  # paper order
    reh = rows[1]
    assert reh["n"] == 2 and reh["seeds"] == [0, 1]
    m, sd = reh["avg_acc"]  # per-run Avg Acc 70% and 50%
    assert m == pytest.approx(60.0) and sd == pytest.approx(100 * math.sqrt(0.02))
    assert reh["last_acc"][0] == pytest.approx(50.0)
    assert math.isnan(rows[0]["bwt"][0])  # joint: a single step, no BWT
    table = format_table(rows, "continual")
    assert "| rehearsal_random | 2 | 60.00 ± 14.14 |" in table and "| joint | 1 | 95.00 |" in table
    import io

    import pandas as pd

    csv = pd.read_csv(io.StringIO(format_table(rows, "continual", "csv")))
    assert list(csv.columns[:7]) == ["split", "method", "stat", "seed", "runs", "avg_acc_pct", "last_acc_pct"]
    assert {"avg_full_wer_pct", "optimizer_steps", "wall_s"} <= set(csv.columns)
    reh = csv[csv["method"] == "rehearsal_random"].set_index("stat")
    assert list(reh.index) == ["seed", "seed", "mean", "std"]  # per-seed lines beside the aggregate
    assert list(reh.loc["seed", "avg_acc_pct"]) == [70.0, 50.0]  # percent, like the Markdown
    assert reh.loc["mean", "avg_acc_pct"] == pytest.approx(60.0) and reh.loc["std", "runs"] == 2


def test_cli_over_parent_folder(tmp_path, capsys):
    _make_run(tmp_path, "finetune", 0, [[0.9], [0.1, 0.8]], [0.9, 0.45])
    _make_run(tmp_path, "finetune", 1, [[0.7], [0.1, 0.6]], [0.7, 0.35])
    assert cli_main([str(tmp_path), "--out", str(tmp_path / "agg")], prog="slukd report") == 0
    out = capsys.readouterr().out
    assert "| finetune | 2 | 60.00 ± 10.61 | 40.00 ± 7.07 |" in out
    assert (tmp_path / "agg" / "table_continual.csv").is_file()
    assert cli_main([str(tmp_path / "nowhere")], prog="slukd report") == 2  # a user error


def test_rows_never_mix_settings_or_duplicate_seeds(tmp_path, caplog):
    _make_run(tmp_path / "a", "seq_kd", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6])
    _make_run(tmp_path / "a", "seq_kd", 1, [[0.9], [0.4, 0.8]], [0.9, 0.6])
    _make_run(tmp_path / "b", "seq_kd", 2, [[0.9], [0.2, 0.8]], [0.9, 0.5], settings={"lr": 0.01})
    rows, _ = _rows(tmp_path)
    assert sorted(r["n"] for r in rows) == [1, 2]  # the lr=0.01 run is its own row, not averaged in
    assert any(r["label"].startswith("seq_kd [lr=") for r in rows)
    assert "different settings (lr)" in caplog.text
    _make_run(tmp_path / "c", "seq_kd", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6])  # same settings and seed twice
    with pytest.raises(ReportError, match="same settings and seed 0"):
        _rows(tmp_path)


def test_incomplete_and_debug_runs_are_listed_apart(tmp_path):
    _make_run(tmp_path / "a", "finetune", 0, [[0.9], [0.2, 0.8]], [0.9, 0.5])
    part = _make_run(tmp_path / "a", "finetune", 1, [[0.9], [0.2, 0.8]], [0.9, 0.5])
    (part / "results" / "step2.json").unlink()
    step1 = json.loads((part / "results" / "step1.json").read_text())
    assert step1["n_steps"] == 2
    _make_run(tmp_path / "a", "finetune", 2, [[0.9], [0.1, 0.8]], [0.9, 0.45], shortened=True)
    started = tmp_path / "a" / "seq_kd" / "seed0"
    started.mkdir(parents=True)
    (started / "run_info.json").write_text(json.dumps({"identity": {"row": "seq_kd", "seed": 0}}))
    text = report_runs([tmp_path])
    assert "| finetune | 1 | 70.00 |" in text  # only the complete, real run
    assert "finetune seed 1: 1/2 tasks" in text and "finetune seed 2: shortened (--debug)" in text
    assert "seq_kd seed 0: no task finished" in text


def test_bad_step_file_is_named(tmp_path):
    run = _make_run(tmp_path, "finetune", 0, [[0.9]], [0.9])
    (run / "results" / "step1.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match=r"step1.json: unreadable"):
        summarise_run(run)
    with pytest.raises(ReportError, match=r"step1.json: unreadable"):
        report_runs([tmp_path])
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    with pytest.raises(ReportError, match="no results"):
        summarise_run(empty)


def test_captioning_rows_percent_of_their_teacher_and_spread(tmp_path):
    teacher = _caption_run(tmp_path, "teacher", 0, 1.25, role="teacher")
    for seed, cider in enumerate([1.0, 1.1, 1.2]):
        _caption_run(tmp_path, "student_supervised", seed, cider, teacher=teacher)
    for seed, cider in enumerate([1.05, 1.15, 1.25]):
        _caption_run(tmp_path, "student_seqkd", seed, cider, teacher=teacher)
    rows, _ = _rows(tmp_path)
    by = {r["row"]: r for r in rows}
    assert by["student_supervised"]["CIDEr_D"] == (pytest.approx(110.0), pytest.approx(10.0))  # percent
    assert by["student_supervised"]["vs_teacher"][0] == pytest.approx(88.0)
    assert by["teacher"]["vs_teacher"][0] == pytest.approx(100.0)
    text = report_runs([tmp_path], tmp_path / "out")
    assert "| student_seqkd | 3 | 115.00 ± 10.00 | 92.00 ± 8.00 |" in text
    assert "- student_seqkd vs student_supervised" in text  # 5 points apart, std 10: not ranked
    assert (tmp_path / "out" / "table_captioning.md").is_file()


def _code(fp, **files):
    return {"slukd": "0.1.0", "torch": "2.x", "speechbrain": "1.1.2", "fingerprint": fp,
            "files": {"continual/memory.py": "aaa", "train/brain.py": "bbb", **files}}  # fmt: skip


def test_report_never_writes_into_run_folders(tmp_path):
    _make_run(tmp_path / "runs", "finetune", 0, [[0.9], [0.2, 0.8]], [0.9, 0.5])
    _make_run(tmp_path / "runs", "finetune", 1, [[0.8], [0.3, 0.7]], [0.8, 0.5])

    def snapshot():
        return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "runs").rglob("*") if p.is_file()}

    before = snapshot()
    report_runs([tmp_path / "runs"], tmp_path / "out", paper="slurp3")
    assert snapshot() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["acc_per_step.png", "table_continual.csv",
                                                                     "table_continual.md"]  # fmt: skip


def test_runs_of_different_code_are_never_averaged_and_the_difference_is_named(tmp_path, caplog):
    a = {1: {"code": _code("f1")}, 2: {"code": _code("f1")}}
    b = {
        1: {"code": _code("f2", **{"continual/memory.py": "zzz"})},
        2: {"code": _code("f2", **{"continual/memory.py": "zzz"})},
    }
    mixed = {1: {"code": _code("f1")}, 2: {"code": _code("f2")}}
    _make_run(tmp_path / "a", "seq_kd", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6], extra=a)
    _make_run(tmp_path / "a", "seq_kd", 1, [[0.9], [0.4, 0.8]], [0.9, 0.6], extra=a)
    _make_run(tmp_path / "b", "seq_kd", 2, [[0.9], [0.2, 0.8]], [0.9, 0.5], extra=b)
    _make_run(tmp_path / "c", "seq_kd", 3, [[0.9], [0.2, 0.8]], [0.9, 0.5], extra=mixed)
    rows, left = _rows(tmp_path)
    assert sorted(r["n"] for r in rows) == [1, 2]
    assert any(r["label"] == "seq_kd [code: continual/memory.py]" for r in rows), [r["label"] for r in rows]
    assert [s["seed"] for s in left] == [3] and "different code (f1, f2)" in left[0]["progress"]
    text = report_runs([tmp_path])
    assert "seq_kd seed 3: its steps were made by different code (f1, f2)" in text


def test_run_report_shows_memory_full_target_wer_and_optimiser_steps(tmp_path):
    mem = {"rule": "fixed_quota", "quota_per_class": 2, "capacity": 8, "total": 4, "per_class": {"a": 2, "b": 2}}
    extra = {1: {"optimizer_steps": 30, "continual": {"memory": {**mem, "total": 2, "per_class": {"a": 2}}}},
             2: {"optimizer_steps": 20, "continual": {"memory": mem}},
             3: {"optimizer_steps": 10, "continual": {"memory": mem}, "code": _code("f1"), "data_digest": "d1",
                 "device": {"device": "cpu", "name": "x", "cpus": 2}}}  # fmt: skip
    run = _make_run(tmp_path, "rehearsal_random", 0, [[0.9], [0.4, 0.8], [0.3, 0.7, 0.8]], [0.9, 0.6, 0.5], extra=extra)
    for k in (1, 2, 3):  # full-target WER beside the transcript WER
        p = run / "results" / f"step{k}.json"
        d = json.loads(p.read_text())
        d["seen"]["full_wer"] = 0.1 * k
        for t in d["per_task"]:
            t["full_wer"] = 0.1 * k
        p.write_text(json.dumps(d))
    s = write_run_report(run)
    assert s["optimizer_steps"] == 60 and s["avg_full_wer"] == pytest.approx(0.2)
    md = (run / "report.md").read_text()
    assert "| 1 | fixed_quota | 2 | 2 | a 2 | 30 |" in md and "| 2 | fixed_quota | 2 | 4 | a 2, b 2 | 20 |" in md
    assert "| 3 | - | - | - | - | 10 |" in md  # no update after the last task
    assert "Avg WER (full target)" in md and "fingerprint f1" in md and "Data digest: d1" in md
    table = report_runs([tmp_path])
    assert "Avg WER (transcript) (%) | Avg WER (full target) (%)" in table and "| Optimiser steps |" in table
    assert "Memory after task 1 (what task 2 uses): rehearsal_random: fixed_quota, 2 items (2 per scenario)" in table


def test_captioning_students_against_the_teacher_use_welch(tmp_path):
    teacher = _caption_run(tmp_path, "teacher", 0, 1.25, role="teacher")
    for seed in (1, 2):
        _caption_run(tmp_path, "teacher", seed, 1.25 + 0.05 * seed, role="teacher")
    for seed, cider in enumerate([1.0, 1.02, 0.98]):
        _caption_run(tmp_path, "student_mse", seed, cider, teacher=teacher)
    text = report_runs([tmp_path])
    assert "- student_mse: -30.00 (95% CI" in text and "Welch, 3 vs 3 runs" in text
    assert "below the teacher: holds" in text


def test_one_teacher_run_is_a_fixed_reference(tmp_path):
    """The sweep trains one teacher (seed 0) for every student: its CIDEr-D is a fixed value and each student row gets
    the one-sample t-interval. Hand case: students 100, 102, 98 against 125: mean -25, sd 2, se 2/sqrt(3),
    t_{0.975, 2} = 4.302653, so the interval is -25 -/+ 4.97 and lies below 0."""
    teacher = _caption_run(tmp_path, "teacher", 0, 1.25, role="teacher")
    for seed, cider in enumerate([1.0, 1.02, 0.98]):
        _caption_run(tmp_path, "student_mse", seed, cider, teacher=teacher)
    _caption_run(tmp_path, "student_seqkd", 0, 1.3, teacher=teacher)
    text = report_runs([tmp_path])
    assert "- student_mse: -25.00 (95% CI -29.97 to -20.03" in text and "3 runs against one fixed value" in text
    assert "student_mse: -25.00" in text and "below the teacher: holds" in text
    assert "- student_seqkd: +5.00 (no interval: 1 run(s)); below the teacher: not shown with 1 seed(s)" in text


def test_captioning_steps_are_the_trained_budget(tmp_path):
    """A run that kept its epoch-6 checkpoint of 8 (50 steps an epoch) trained 400 steps: older results record the best
    checkpoint's 300 (the counter restored with it), newer ones the total beside ``best_steps``; both read 400."""
    teacher = _caption_run(tmp_path, "teacher", 0, 1.2, role="teacher")
    for seed, extra in ((0, {"steps": 300, "epochs": 8, "best_epoch": 6}),
                        (1, {"steps": 400, "best_steps": 300, "epochs": 8, "best_epoch": 6})):  # fmt: skip
        run = _caption_run(tmp_path, "student_mse", seed, 1.0, teacher=teacher)
        r = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**r, **extra}))
    assert "| student_mse | 2 |" in report_runs([tmp_path]) and "| 400 ± 0 |" in report_runs([tmp_path])


def test_captioning_findings_hand_case(tmp_path):
    """One teacher (CIDEr-D 120); the full recipe 116, 117, 118 (mean 117 = 97.5%: above 95% = 114 with the
    one-sample interval 3 -/+ 2.48); seq-KD+MSE 110-112 against seq-KD+tok-KD 100-102 (+10, Welch, holds);
    seq-KD+contrastive 101-103 against tok-KD (+1 with spread 1: not shown); supervised 104-106 against seq-KD
    108-110 (+4 with spread 1, Welch df 4: holds). Rows not run leave their findings out."""
    teacher = _caption_run(tmp_path, "teacher", 0, 1.2, role="teacher")
    rows = {"student_seqkd_contrastive_audio": 1.16, "student_seqkd_mse": 1.10, "student_seqkd_tokkd": 1.00,
            "student_seqkd_contrastive": 1.01, "student_supervised": 1.04, "student_seqkd": 1.08}  # fmt: skip
    for row, base in rows.items():
        for seed in range(3):
            _caption_run(tmp_path, row, seed, base + 0.01 * seed, teacher=teacher)
    text = report_runs([tmp_path])
    lines = {ln.split(":")[0][2:]: ln for ln in text.splitlines() if ln.startswith("- ")}
    comp = lines["the full recipe's student is competitive with the teacher (≥ 95% of its CIDEr-D)"]
    assert ": holds: student_seqkd_contrastive_audio − 95% of teacher +3.00 (95% CI +0.52 to +5.48" in comp
    assert "against the whole teacher: -3.00" in comp
    enc = lines["encoder KD beats decoder (token) KD, on top of seq-KD"]
    assert enc.startswith("- encoder KD beats decoder (token) KD, on top of seq-KD: not shown with 3 seeds")
    assert "student_seqkd_mse − student_seqkd_tokkd +10.00 (95% CI" in enc
    assert "KD beats supervised training (all captions): holds: student_seqkd − student_supervised +4.00" in text
    assert "contrastive beats MSE encoder KD (all captions): does not hold" in text
    assert "20% of the captions" not in text and "each term alone" not in text  # rows not run: left out


def test_cross_table_compares_each_term_and_method_with_its_baseline(tmp_path):
    """Hand case: on slurp3 tok_kd is +10 over rehearsal_herding in every seed (interval excludes 0), audio_kd is
    +/-1 around it (interval includes 0); the captioning tok-KD student is compared with the supervised one (Welch);
    rows without runs say so."""
    from slukd.report.cross import cross_table
    from slukd.report.table import aggregate, find_runs, group_runs, summarise

    slu, cap = tmp_path / "slu", tmp_path / "cap"
    base = {0: 0.50, 1: 0.60, 2: 0.55}
    for seed, a in base.items():
        for row, acc in (("rehearsal_herding", a), ("tok_kd", a + 0.10), ("audio_kd", a + (0.01 if seed else -0.01)),
                         ("finetune", a - 0.2), ("ewc", a - 0.15)):  # fmt: skip
            _make_run(slu, row, seed, [[0.9], [0.1, acc]], [0.9, acc], settings={"split": "slurp3"})
        _caption_run(cap, "student_supervised", seed, 0.30 + 0.01 * seed)
        _caption_run(cap, "student_tokkd", seed, 0.40 + 0.01 * seed)
        _make_run(slu / "joint", "joint", seed, [[0.97]], [0.97], settings={"split": "joint"})
    rows = aggregate(group_runs([summarise(r) for r in find_runs([slu, cap])])[0])
    text = cross_table(rows)
    assert "joint:" not in text and "### joint" not in text  # the upper bound is not a continual split
    assert "Joint (offline upper bound) beside slurp3, `joint`: Avg Acc 97.00 ± 0.00 (n=3)" in text
    tok = next(ln for ln in text.splitlines() if ln.startswith("| token KD"))
    assert "+5.00*" in tok  # Avg Acc = (90 + acc)/2: +10 points at task 2 are +5 on the average, every seed
    assert "+10.00*" in tok  # CIDEr-D 40-42 vs 30-32 (Welch)
    audio = next(ln for ln in text.splitlines() if ln.startswith("| encoder MSE"))
    assert "*" not in audio.split("|")[3] and "no runs" in audio  # slurp3 delta not significant; no captioning row
    ewc = next(ln for ln in text.splitlines() if ln.startswith("| EWC"))
    assert "finetune: +2.50*" in ewc
    assert "| A-GEM" in text and "no runs" in next(ln for ln in text.splitlines() if ln.startswith("| A-GEM"))
    out = tmp_path / "out"
    assert cli_main([str(slu), str(cap), "--cross", "--out", str(out)]) == 0
    assert (out / "table_cross.md").read_text().startswith("## KD terms")


def test_captioning_runs_of_different_code_are_listed_apart(tmp_path):
    teacher = _caption_run(tmp_path, "teacher", 0, 1.25, role="teacher", code=_code("t1"))
    for seed in (0, 1):
        _caption_run(tmp_path, "student_seqkd", seed, 1.0 + seed / 10, teacher=teacher, code=_code("f1"))
    new = _code("f2", **{"captioning/brain.py": "zzz"})
    _caption_run(tmp_path, "student_seqkd", 2, 1.3, teacher=teacher, code=new)
    rows, _ = _rows(tmp_path)
    seqkd = sorted((r for r in rows if r["row"] == "student_seqkd"), key=lambda r: r["n"])
    assert [r["n"] for r in seqkd] == [1, 2]
    assert "captioning/brain.py" in seqkd[0]["label"]


def test_a_plugin_memory_is_reported_with_its_plugin(tmp_path):
    mem = {"selection": "random", "items": 2, "rule": "fixed_quota", "quota_per_class": 1, "capacity": 2, "total": 2,
           "per_class": {"a": 1, "b": 1}}  # fmt: skip
    extra = {k: {"continual": {"agem": mem}} for k in (1, 2)}
    run = _make_run(tmp_path, "agem", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6], extra=extra)
    md = (run / "report.md").read_text() if (run / "report.md").exists() else ""
    assert "agem" not in md  # nothing written yet
    write_run_report(run)
    md = (run / "report.md").read_text()
    assert "| 1 | fixed_quota | 1 | 2 | a 1, b 1 |" in md and "kept by the `agem` plugin" in md
    table = report_runs([tmp_path])
    assert "agem: agem's memory: fixed_quota, 2 items (1 per scenario)" in table


def test_the_declared_memory_record_is_read_before_any_plugin_record(tmp_path):
    """A step result with the runner's ``memory`` record is read from it, whatever the plugins' own records hold
    (here a plugin record shaped like a memory that is not one)."""
    mem = {"rule": "fixed_quota", "quota_per_class": 1, "capacity": 2, "total": 2, "per_class": {"a": 1, "b": 1},
           "plugin": "keeper"}  # fmt: skip
    decoy = {"rule": "other", "total": 9, "per_class": {"a": 9}}
    extra = {k: {"memory": mem, "continual": {"decoy": decoy}} for k in (1, 2)}
    run = _make_run(tmp_path, "keeper_row", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6], extra=extra)
    write_run_report(run)
    md = (run / "report.md").read_text()
    assert "| 1 | fixed_quota | 1 | 2 | a 1, b 1 |" in md and "kept by the `keeper` plugin" in md
    assert "| 1 | other" not in md
    none = _make_run(tmp_path, "no_memory", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6],
                     extra={k: {"memory": None, "continual": {"decoy": decoy}} for k in (1, 2)})  # fmt: skip
    write_run_report(none)
    assert "No memory in any task" in (none / "report.md").read_text()


def test_slu_table_gives_each_row_its_paired_interval_against_finetune(tmp_path):
    """Hand case: tok_kd − finetune on Avg Acc = (task-2 gain)/2 = 4, 5, 6 points over three seeds: mean 5, sd 1,
    95% t-interval 5 ± 4.303 / sqrt(3) = [+2.52, +7.48]; joint has no paired difference ("-")."""
    for seed, gain in enumerate((0.08, 0.10, 0.12)):
        base = 0.5 + 0.05 * seed
        split = {"split": "slurp3"}
        _make_run(tmp_path, "finetune", seed, [[0.9], [0.1, base]], [0.9, base], settings=split)
        _make_run(tmp_path, "tok_kd", seed, [[0.9], [0.1, base + gain]], [0.9, base + gain], settings=split)
        _make_run(tmp_path / "joint", "joint", seed, [[0.97]], [0.97], settings={"split": "joint"})
    text = report_runs([tmp_path])
    head = next(ln for ln in text.splitlines() if ln.startswith("| method"))
    assert head.endswith("| Δ Avg Acc vs finetune [95% CI] |")
    cell = {ln.split(" | ")[0][2:]: ln.rsplit(" | ", 1)[1][:-2] for ln in text.splitlines() if ln.startswith("| ")}
    assert cell["tok_kd"] == "+5.00* [+2.52, +7.48]"
    assert cell["finetune"] == "-" and cell["joint"] == "-"
