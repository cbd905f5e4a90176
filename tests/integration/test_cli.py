"""The command line as a user meets it: help on every level, one clear line (and a non-zero exit) for a user
error with the traceback only under --verbose, consistent option names, recipes' --help listing the row's hparams."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SLUKD = [sys.executable, "-m", "slukd.cli"]


def _run(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["train", "--help"],
        ["sweep", "--help"],
        ["demo", "--help"],
        ["report", "--help"],
        ["synth", "--help"],
        ["synth", "slu", "--help"],
        ["synth", "scenes", "--help"],
        ["score", "--help"],
        ["score", "slurp", "--help"],
        ["bench", "--help"],
        ["understand", "--help"],
        ["caption", "--help"],
        ["train", "slu", "seq_kd", "--help"],
    ],  # fmt: skip
)
def test_help_on_every_level(argv):
    proc = _run(*SLUKD, *argv)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "usage" in out.lower() or "hparams of" in out
    assert "[rest" not in out and " rest ..." not in out and "REMAINDER" not in out  # no meaningless positional


def test_recipe_help_lists_the_rows_hparams_with_comments():
    for recipe, row in (("slurp_incremental", "seq_kd"), ("captioning_kd", "student_seqkd")):
        proc = _run(sys.executable, f"recipes/{recipe}.py", f"hparams/{recipe}/{row}.yaml", "--help")
        assert proc.returncode == 0, proc.stderr
        assert "--seq_kd_weight" in proc.stdout and "sequence-level KD" in proc.stdout.replace(
            "seq-KD", "sequence-level KD"
        )
        assert "Traceback" not in proc.stderr


def test_a_user_error_is_one_line_and_a_traceback_only_with_verbose(tmp_path):
    bad = _run(*SLUKD, "train", "slu", "seq_kd", "--later_task_epochs", "one", f"--output_folder={tmp_path / 'o'}")
    assert bad.returncode == 2
    assert "later_task_epochs" in bad.stderr and "Traceback" not in bad.stderr
    assert len([ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]) == 1
    assert not (tmp_path / "o").exists()  # refused before any work
    verbose = _run(*SLUKD, "--verbose", "train", "slu", "seq_kd", "--later_task_epochs", "one")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    score = ["score", "slurp", "--gold", str(tmp_path / "g.jsonl"), "--pred", str(tmp_path / "p.jsonl")]
    for argv in (["train", "slu", "no_such_row"], ["report", str(tmp_path / "none")], ["bench", "nope"], score):
        proc = _run(*SLUKD, *argv)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, argv
    recipe = _run(sys.executable, "recipes/slurp_incremental.py", "hparams/slurp_incremental/seq_kd.yaml",
                  "--no_such_key=1")  # fmt: skip
    assert recipe.returncode == 2 and "no_such_key" in recipe.stderr and "Traceback" not in recipe.stderr


def test_option_names_are_consistent():
    for argv in (["synth", "slu", "--help"], ["synth", "scenes", "--help"], ["sweep", "--help"], ["demo", "--help"]):
        out = _run(*SLUKD, *argv).stdout
        assert "--jobs" in out, argv
    score = _run(*SLUKD, "score", "slurp", "--help").stdout
    assert "--gold_transcripts" in score and "--per_label" in score
    assert "--from_slurp_jsonl" in _run(*SLUKD, "synth", "slu", "--help").stdout
