"""The command line as a newcomer meets it: every --help has its defaults and an example, `slukd --help` is fast
(no torch), options take hyphens or underscores, a user error is one line with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slukd.cli import COMMANDS, main, normalize_option
from tests.conftest import REPO

ALL = [[c] for c, spec in COMMANDS.items() if not isinstance(spec, dict)] + [
    [c, w] for c, spec in COMMANDS.items() if isinstance(spec, dict) for w in spec
]


@pytest.mark.parametrize("cmd", ALL, ids=[" ".join(c) for c in ALL])
def test_every_help_has_defaults_and_an_example(cmd, capsys):
    try:
        rc = main([*cmd, "--help"])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "example:" in out, out
    assert "default" in out, out


def test_top_level_help_does_not_import_torch():
    code = (
        "import sys\nfrom slukd.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'speechbrain', 'torchaudio') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "IMPORTED []" in proc.stdout, proc.stdout + proc.stderr
    assert "slukd demo --tiny" in proc.stdout


def test_hyphen_and_underscore_spellings():
    assert normalize_option("--data-folder=/a-b/c-d") == "--data_folder=/a-b/c-d"
    assert normalize_option("--student_model.d-model") == "--student_model.d_model"
    assert normalize_option("value-with-hyphen") == "value-with-hyphen"
    assert normalize_option("--") == "--" and normalize_option("-h") == "-h"


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    with pytest.raises(SystemExit) as exc:  # a usage error (argparse): status 2 as well
        main(["synth", "slu"])
    assert exc.value.code == 2
    capsys.readouterr()
    # a hyphenated option of a subcommand is the underscore one
    assert main(["sweep", "slu", "--rows", "finetune", "--dry-run", "--out", str(tmp_path / "s"),
                 "--set", "numbr_of_epochs=1"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean number_of_epochs" in err[0]


def test_recipe_help_puts_each_comment_on_its_own_key():
    """Comments above a key, after a tagged value, and continued on the next lines belong to their own key."""
    from slukd.config import describe_hparams

    rows = {k: c for k, _, c in describe_hparams(REPO / "hparams" / "slurp_incremental" / "seq_kd.yaml")}
    assert rows["kd_terms"].startswith("The KD methods")
    assert "one per task" in rows["epoch_counter"] and "one per task" not in rows["train_logger"]
    assert rows["memory_fraction"].endswith("exactly one of memory_per_class and memory_fraction is set")
    assert rows["tier"].startswith("[tiny|demo|full]")
    assert not rows["model"].startswith("[")  # the section comment above it is not the model's
