"""``python -m slukd.captioning.table``: teacher, student rows x seeds, report; real row files on a tiny base."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slukd.captioning.table import plan, row_files

REPO = Path(__file__).resolve().parents[1]
HP = REPO / "hparams" / "captioning_kd"
ROWS = ["teacher", "student_supervised", "student_seqkd_contrastive_audio", "student_scarce_seqkd_mse"]


def _tiny_hparams(tmp: Path) -> Path:
    """The real row files over a tiny base (tiny_smoke.yaml's models and settings on the real demo_base.yaml)."""
    hp = tmp / "hp"
    hp.mkdir()
    base = yaml.safe_load((HP / "demo_base.yaml").read_text())
    smoke = yaml.safe_load((HP / "tiny_smoke.yaml").read_text())
    for key in ("tier", "teacher_model", "student_model", "eval"):
        base[key] = smoke[key]
    base["kd"].update(smoke["kd"])
    base["train"].update(smoke["train"])
    base["data_folder"] = str(tmp / "data")
    base["output_folder"] = str(tmp / "results/seed{seed}/{row}")
    base["teacher_folder"] = str(tmp / "results/seed{seed}/teacher")
    base["limit_clips"] = 12
    (hp / "demo_base.yaml").write_text(yaml.safe_dump(base))
    for row in ROWS:
        shutil.copy(HP / f"{row}.yaml", hp / f"{row}.yaml")
    return hp


def test_plan_orders_teacher_then_an_audio_row_first(tmp_path):
    hp = _tiny_hparams(tmp_path)
    teacher, free, kd, folders = plan(row_files(hp, None), [0, 1], 0, ["--train.epochs=1"])
    assert teacher[2:] == [str(hp / "teacher.yaml"), "--train.epochs=1", "--seed=0"]
    assert [Path(c[2]).stem for c in free] == ["student_supervised"] * 2
    assert Path(kd[0][2]).stem == "student_seqkd_contrastive_audio" and "--seed=0" in kd[0]
    assert all(f"--teacher_folder={tmp_path / 'results/seed0/teacher'}" in c for c in free + kd)
    assert len(folders) == 1 + 3 * 2


@pytest.mark.slow  # about a minute: 7 recipe processes, then a no-op rerun
def test_table_runs_every_row_and_seed_and_writes_the_summary(tmp_path):
    hp = _tiny_hparams(tmp_path)
    cmd = [sys.executable, "-m", "slukd.captioning.table", "--hparams_dir", str(hp), "--seeds", "0", "1",
           "--jobs", "2", "--", "--train.epochs=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = tmp_path / "results"
    assert (res / "seed0/teacher/results.json").is_file() and not (res / "seed1/teacher").exists()
    for seed in (0, 1):
        for row in ROWS[1:]:
            assert (res / f"seed{seed}/{row}/results.json").is_file(), (seed, row)
    summary = (res / "captioning_summary.md").read_text()
    assert "| student_seqkd_contrastive_audio | seq+enc-contrastive | 1 | True | 2 |" in summary
    # the teacher's targets were computed once (one cache file) and the rerun is a no-op that still reports
    assert len(list((res / "seed0/teacher/teacher_targets").glob("pseudo_*.json"))) == 1
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "captioning_results.md" in again.stderr
