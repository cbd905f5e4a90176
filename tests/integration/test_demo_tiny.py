"""The one-minute example (``slukd demo --tiny``, ``make tiny``): the four demo rows, three tasks each, on the tiny
corpus and the shipped tiny base, end to end in a subprocess as a user runs it; a rerun skips the finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slukd.data import tts
from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.skipif(tts.available_backend() is None, reason="no espeak-ng program or library")
def test_tiny_demo_end_to_end(tmp_path):
    data, out = tmp_path / "slu_tiny", tmp_path / "demo_tiny"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "slukd.demo", "--tiny", "--data", str(data), "--out", str(out), "--noprogressbar"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("finetune", "rehearsal_herding", "seq_kd"):
        assert f"| {row} | 1 |" in proc.stdout
        steps = sorted((out / "slurp3" / row / "seed0" / "results").glob("step*.json"))
        assert [p.name for p in steps] == ["step1.json", "step2.json", "step3.json"]
    assert "| joint | 1 |" in proc.stdout and "total wall time" in proc.stdout
    info = json.loads((data / "corpus.json").read_text())
    assert info["config"]["tier"] == "tiny"
    # a rerun: every run is finished and skipped; the corpus is reused, never rebuilt
    before = (data / "corpus.json").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert again.returncode == 0 and "finished earlier: skipped" in again.stderr
    assert (data / "corpus.json").stat().st_mtime_ns == before
    # the main job's corpus settings on the tiny folder: refused with one line naming --tier, nothing started
    wrong = subprocess.run([sys.executable, "-m", "slukd.demo", "--data", str(data), "--out", str(tmp_path / "x")],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert wrong.returncode == 2 and "--tier" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
