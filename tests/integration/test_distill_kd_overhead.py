"""Smoke test of benchmarks/kd_overhead.py on a tiny model (the figures themselves are not asserted)."""

import importlib.util
import json

from tests.conftest import REPO


def test_kd_overhead_runs_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("kd_overhead", REPO / "benchmarks" / "kd_overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "kd.json"
    args = "--batch 3 --frames 24 --tokens 5 --vocab 20 --n-mels 8 --d-model 16 --teacher-d-model 32 --enc-layers 1"
    args += f" --dec-layers 1 --proj-dim 8 --warmup 1 --steps 1 --repeats 1 --json {out}"
    assert mod.main(args.split()) == 0
    text = capsys.readouterr().out
    rec = json.loads(out.read_text())
    for m in mod.METHODS:
        assert m in text and rec["ms_per_step"][m] > 0
    assert rec["ratio_to_sup"]["sup"] == 1.0
