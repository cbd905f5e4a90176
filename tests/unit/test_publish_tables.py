"""benchmarks/publish_tables.py: the published blocks come from the runs' own files, partial sweeps are refused."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO
from tests.unit.test_report import _make_run


def _publish():
    spec = importlib.util.spec_from_file_location("publish_tables", REPO / "benchmarks" / "publish_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_replace_block_keeps_the_rest_and_names_a_missing_marker():
    pt = _publish()
    text = "head\n<!-- X:begin -->\nold\n<!-- X:end -->\ntail\n"
    assert (
        pt.replace_block(text, "X", "new\nlines", "page.md")
        == "head\n<!-- X:begin -->\nnew\nlines\n<!-- X:end -->\ntail\n"
    )
    with pytest.raises(SystemExit, match=r"page\.md: no <!-- Y:begin -->"):
        pt.replace_block(text, "Y", "new", "page.md")


def test_a_sweep_with_unfinished_runs_is_refused_and_a_complete_one_rendered(tmp_path, capsys, monkeypatch):
    pt = _publish()
    monkeypatch.setattr(pt, "README_SLU", (("seq_kd", "finetune"), ("runs", "Avg Acc (%)")))
    sweep = tmp_path / "table_slu"
    for seed in (0, 1):
        _make_run(sweep / "slurp3", "finetune", seed, [[0.9], [0.2, 0.8]], [0.9, 0.5])
    _make_run(sweep / "slurp3", "seq_kd", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6])
    half = _make_run(sweep / "slurp3", "seq_kd", 1, [[0.9], [0.4, 0.8]], [0.9, 0.6])
    (half / "results" / "step2.json").unlink()  # seed 1 of seq_kd stopped after task 1
    assert pt.main(["--slu3", str(sweep), "--check"]) == 2
    assert "seq_kd seed 1" in capsys.readouterr().err
    args = pt.argparse.Namespace(slu3=sweep, slu6=None, captioning=None, allow_incomplete=True)
    pages = pt.build(args)
    assert sorted(p.name for p in pages) == ["README.md", "results_slu.md"]
    page, text = next((p, t) for p, t in pages.items() if p.name == "results_slu.md")
    block = text[text.index("<!-- SLU3TABLE:begin -->") : text.index("<!-- SLU3TABLE:end -->")]
    assert "#### SLURP-3" in block and "some runs incomplete" in block and "| finetune | 2 |" in block
    assert "seq_kd seed 1: 1/2 tasks" in block
    assert text.startswith(page.read_text()[:200])  # the page around the block is kept
    readme = next(t for p, t in pages.items() if p.name == "README.md")
    short = readme[readme.index("<!-- README_SLU:begin -->") : readme.index("<!-- README_SLU:end -->")]
    finetune = next(ln for ln in block.splitlines() if ln.startswith("| finetune | 2 |"))
    assert short.splitlines()[1:] == [
        "| method | runs | Avg Acc (%) |",
        "|---|---|---|",
        next(ln for ln in short.splitlines() if ln.startswith("| seq_kd |")),
        "| finetune | 2 | " + finetune.split(" | ")[2] + " |",
    ]
    assert short.splitlines()[3].startswith("| seq_kd | 1 | ")  # rows in README_SLU's order, cells unchanged


def test_select_table_names_a_row_or_column_the_report_lacks():
    pt = _publish()
    report = "## T\n\n| method | runs | A (%) |\n|---|---|---|\n| x | 2 | 1.0 ± 0.1 |\n\nmore\n"
    assert pt.select_table(report, ("x",), ("A (%)",), "w") == "| method | A (%) |\n|---|---|\n| x | 1.0 ± 0.1 |\n"
    with pytest.raises(SystemExit, match="w: the report has no B, y"):
        pt.select_table(report, ("x", "y"), ("B",), "w")


def test_the_heading_names_the_machines_the_runs_recorded(tmp_path):
    pt = _publish()
    dev = {"device": "cpu", "name": "Test CPU", "cpus": 2}
    for seed in (0, 1):
        _make_run(tmp_path / "slurp3", "finetune", seed, [[0.9], [0.2, 0.8]], [0.9, 0.5], extra={2: {"device": dev}})
    _make_run(tmp_path / "slurp3", "seq_kd", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6])  # records no device
    assert pt.machines(tmp_path) == "Test CPU (cpu, 2 CPUs): 2 run(s)"


def test_captioning_and_cross_pages_with_the_readme_table(tmp_path, monkeypatch):
    """The whole publication on complete little sweeps: the SLU and captioning pages, the cross table (both tasks)
    and both README tables, whose cells are those of the full tables."""
    from tests.unit.test_report import _caption_run

    pt = _publish()
    monkeypatch.setattr(pt, "README_SLU", (("tok_kd",), ("runs", "Avg Acc (%)")))
    monkeypatch.setattr(pt, "README_CAP", (("teacher", "student_tokkd"), ("runs", "CIDEr-D (%)", "Optimiser steps")))
    slu, cap = tmp_path / "table_slu", tmp_path / "table_captioning"
    teacher = _caption_run(cap, "teacher", 0, 1.2, role="teacher")
    for seed in (0, 1):
        for row, acc in (("rehearsal_herding", 0.5), ("tok_kd", 0.6)):
            _make_run(slu / "slurp3", row, seed, [[0.9], [0.1, acc]], [0.9, acc + seed / 100],
                      settings={"split": "slurp3"})  # fmt: skip
        _caption_run(cap, "student_supervised", seed, 0.9 + seed / 100, teacher=teacher)
        _caption_run(cap, "student_tokkd", seed, 1.0 + seed / 50, teacher=teacher)
    args = pt.argparse.Namespace(slu3=slu, slu6=None, captioning=cap, allow_incomplete=False)
    pages = {p.name: t for p, t in pt.build(args).items()}
    assert sorted(pages) == ["README.md", "results_captioning.md", "results_cross.md", "results_slu.md"]
    block = pages["results_captioning.md"].split("<!-- CAPTABLE:begin -->")[1].split("<!-- CAPTABLE:end -->")[0]
    assert "#### Captioning" in block and "every run finished" in block and "| student_tokkd | 2 |" in block
    readme = pages["README.md"].split("<!-- README_CAP:begin -->")[1].split("<!-- README_CAP:end -->")[0]
    assert readme.splitlines()[1:] == [
        "| method | runs | CIDEr-D (%) | Optimiser steps |",
        "|---|---|---|---|",
        "| teacher | 1 | 120.00 | - |",
        "| student_tokkd | 2 | 101.00 ± 1.41 | - |",
    ]
    cross = pages["results_cross.md"].split("<!-- CROSSTABLE:begin -->")[1].split("<!-- CROSSTABLE:end -->")[0]
    tok = next(ln for ln in cross.splitlines() if ln.startswith("| token KD"))
    assert "75.25 ± 0.35 (n=2)" in tok and "101.00 ± 1.41 (n=2)" in tok  # SLU Avg Acc; captioning CIDEr-D
    assert "`table_slu`, `table_captioning`" in cross
