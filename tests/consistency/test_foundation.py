"""The package installs, the CLI answers, the layout is the design's."""

import subprocess
import sys

import slukd
from slukd.cli import main
from tests.conftest import REPO


def test_version_and_help():
    proc = subprocess.run([sys.executable, "-m", "slukd.cli", "--version"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"slukd {slukd.__version__}"
    proc = subprocess.run([sys.executable, "-m", "slukd.cli", "--help"], capture_output=True, text=True, check=True)
    for sub in ("score", "report", "synth", "bench"):
        assert sub in proc.stdout


def test_bench_lists_scripts(capsys):
    assert main(["bench"]) == 0


def test_layout():
    for d in ("slukd/distill", "slukd/models", "slukd/continual", "slukd/data", "slukd/metrics", "recipes", "hparams"):
        assert (REPO / d).is_dir(), d
