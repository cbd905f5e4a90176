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


def test_a_sweep_with_unfinished_runs_is_refused_and_a_complete_one_rendered(tmp_path, capsys):
    pt = _publish()
    sweep = tmp_path / "table_slu"
    for seed in (0, 1):
        _make_run(sweep / "slurp3", "finetune", seed, [[0.9], [0.2, 0.8]], [0.9, 0.5])
    _make_run(sweep / "slurp3", "seq_kd", 0, [[0.9], [0.4, 0.8]], [0.9, 0.6])
    half = _make_run(sweep / "slurp3", "seq_kd", 1, [[0.9], [0.4, 0.8]], [0.9, 0.6])
    (half / "results" / "step2.json").unlink()  # seed 1 of seq_kd stopped after task 1
    assert pt.main(["--slu3", str(sweep), "--check"]) == 2
    assert "seq_kd seed 1" in capsys.readouterr().err
    args = pt.argparse.Namespace(slu3=sweep, slu6=None, captioning=None, allow_incomplete=True)
    ((page, text),) = pt.build(args).items()
    block = text[text.index("<!-- SLUTABLES:begin -->") : text.index("<!-- SLUTABLES:end -->")]
    assert "#### SLURP-3" in block and "some runs incomplete" in block and "| finetune | 2 |" in block
    assert "seq_kd seed 1: 1/2 tasks" in block
    assert text.startswith(page.read_text()[:200])  # the page around the block is kept
