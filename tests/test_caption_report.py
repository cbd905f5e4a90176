"""The captioning report: one line per run, and mean ± std per row over seeds (from results.json files)."""

from __future__ import annotations

import json

import pytest

from slukd.captioning.report import cli_main, collect, write_report


def _result(folder, row, role, cider, seed=None):
    folder.mkdir(parents=True)
    r = {"row": row, "role": role, "kd": "" if role == "teacher" else "-", "params": 2_000_000, "steps": 400,
         "test": {"BLEU_1": 0.7, "BLEU_4": 0.4, "METEOR": 0.3, "ROUGE_L": 0.5, "CIDEr_D": cider}}  # fmt: skip
    if seed is not None:
        r["seed"] = seed
    (folder / "results.json").write_text(json.dumps(r))


def test_seeds_are_summarised_with_mean_and_sample_std(tmp_path):
    _result(tmp_path / "seed0/teacher", "teacher", "teacher", 1.25, seed=0)
    for seed, cider in enumerate([1.0, 1.1, 1.2]):
        _result(tmp_path / f"seed{seed}/student_supervised", "student_supervised", "student", cider)  # no seed field
    _result(tmp_path / "seed0/student_seqkd", "student_seqkd", "student", 1.3, seed=0)
    df = write_report([tmp_path], tmp_path / "out")
    assert sorted(df.loc[df.row == "student_supervised", "seed"]) == [0, 1, 2]  # seed read from the folder name
    assert df.loc[df.row == "student_seqkd", "CIDEr_D_vs_teacher_%"].item() == pytest.approx(104.0)
    summary = (tmp_path / "out/captioning_summary.csv").read_text().splitlines()
    head = summary[0].split(",")
    sup = dict(zip(head, next(line for line in summary if line.startswith("student_supervised")).split(",")))
    assert int(sup["n_seeds"]) == 3
    assert float(sup["CIDEr_D_mean"]) == pytest.approx(1.1)
    assert float(sup["CIDEr_D_std"]) == pytest.approx(0.1)  # sample std (ddof 1)
    assert float(sup["CIDEr_D_vs_teacher_%_mean"]) == pytest.approx(88.0)
    one = dict(zip(head, next(line for line in summary if line.startswith("student_seqkd")).split(",")))
    assert int(one["n_seeds"]) == 1 and one["CIDEr_D_std"] == ""  # undefined for a single seed, not 0
    md = (tmp_path / "out/captioning_summary.md").read_text()
    assert "| student_supervised | - | 1 | False | 3 |" in md and "1.100 ± 0.100" in md and "88.0 ± 8.0" in md


def test_single_seed_runs_write_no_summary(tmp_path, capsys):
    _result(tmp_path / "seed0/teacher", "teacher", "teacher", 1.0, seed=0)
    assert cli_main([str(tmp_path)]) == 0
    assert not (tmp_path / "captioning_summary.md").exists()
    assert "teacher" in capsys.readouterr().out


def test_bad_results_file_names_the_file(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"r/results.json:1"):
        collect([tmp_path])
