"""The package works from a wheel: built here, installed into a fresh virtual environment (its dependencies taken
from the current environment, not downloaded), and run from a folder outside the checkout: the CLI finds the
recipes and their row files in the package data and trains a tiny row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers_slu import TINY, make_corpus, write_order


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs_a_row(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    wheel = next(dist.glob("slukd-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    # the current environment's packages (torch, SpeechBrain, ...) as a plain path entry: its editable slukd is not
    # activated (.pth files of a non-site directory are not read), so `import slukd` finds the wheel's copy
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib, "deps.pth").write_text(deps + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", purelib, str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    where = subprocess.run([str(vpy), "-c", "import slukd, slukd.resources as r; print(slukd.__file__); "
                            "print(r.data_root())"], check=True, capture_output=True, text=True, env=env,
                           cwd=tmp_path).stdout.split()  # fmt: skip
    assert where[0].startswith(purelib) and where[1].endswith("slukd/_data"), where
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    slukd = [str(vpy), "-m", "slukd.cli"]
    run = subprocess.run([*slukd, "train", "slu", "finetune", f"--data_folder={corpus}",
                          f"--output_folder={tmp_path / 'run'}", f"--order={write_order(tmp_path)}", *TINY],
                         capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "results" / "step2.json").read_text())["row"] == "finetune"
    rows = subprocess.run([*slukd, "sweep", "captioning", "--dry_run", "--rows", "teacher", "student_seqkd"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert rows.returncode == 0 and "seed0/teacher" in rows.stdout and "_data/hparams/captioning_kd" in rows.stdout
    assert subprocess.run([*slukd, "bench"], capture_output=True, env=env, cwd=tmp_path).returncode == 0
