"""Reliability of the captioning recipe: SIGKILL at several moments of a run (startup, training, test decoding,
writing), rerun the same command each time, and the final results equal an uninterrupted run's.

The recipe has no fault-injection hook, so the kills are timed: at fixed fractions of an uninterrupted run's wall
time, measured in the test. Each rerun resumes, so later kills land in later phases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "hparams" / "captioning_kd" / "tiny_smoke.yaml"
VOLATILE = ("_s", "seconds", "time", "wall", "rss", "speed", "per_s")


def _stable(obj):
    """``obj`` without timing/memory fields (at any depth)."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if not any(t in k for t in VOLATILE)}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


@pytest.mark.slow
def test_captioning_killed_at_several_moments_then_rerun_equals_uninterrupted(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    common = [f"--data_folder={tmp_path / 'data'}", "--train.epochs=4", "--eval.meteor=false"]

    def cmd(out: Path) -> list[str]:
        return [sys.executable, str(REPO / "recipes" / "captioning_kd.py"), str(SMOKE), f"--output_folder={out}",
                f"--teacher_folder={out}", *common]  # fmt: skip

    # build the data once, then time an uninterrupted run
    subprocess.run(cmd(tmp_path / "warm"), env=env, check=True, cwd=REPO, capture_output=True)
    t0 = time.monotonic()
    subprocess.run(cmd(tmp_path / "a"), env=env, check=True, cwd=REPO, capture_output=True)
    wall = time.monotonic() - t0
    killed = 0
    for frac in (0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 0.97):
        proc = subprocess.Popen(cmd(tmp_path / "b"), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            proc.wait(timeout=frac * wall)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
        if (tmp_path / "b" / "results.json").is_file():
            break
    assert killed >= 2, f"only {killed} kills landed (uninterrupted run: {wall:.1f} s)"
    subprocess.run(cmd(tmp_path / "b"), env=env, check=True, cwd=REPO, capture_output=True)
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert _stable(a["test"]) == _stable(b["test"])
    for name in ("predictions_test.jsonl",):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert not list((tmp_path / "b").rglob("*.tmp"))
