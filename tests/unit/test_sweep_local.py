"""slukd.sweep.run_local: exit codes, a run whose dependency failed is not started, progress in the log."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from slukd.sweep import Run, run_local


@dataclass
class _Fake(Run):
    code: int = 0

    def command(self, task: int | None = None) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit({self.code})"]

    def finished(self, check_data: bool = True) -> bool:
        return False


def test_statuses_dependencies_and_progress(tmp_path, caplog):
    def fake(name, code, after=()):
        out = tmp_path / name
        out.mkdir()
        return _Fake(name, "r.py", Path("row.yaml"), out, after=list(after), code=code)

    plan = [fake("ok", 0), fake("bad", 3), fake("needs_bad", 0, after=["bad"])]
    with caplog.at_level(logging.INFO, logger="slukd.sweep"):
        status = run_local(plan, jobs=2, threads=1)
    assert status == {"ok": 0, "bad": 3, "needs_bad": -1}
    text = caplog.text
    assert "bad FAILED (exit 3)" in text and "needs_bad not started" in text
    assert text.count("runs settled)") == 2 and "of 3 runs settled)" in text
