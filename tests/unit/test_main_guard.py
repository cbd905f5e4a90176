"""A recipe's user errors are one line on stderr and exit status 2; a bug keeps its traceback."""

import pytest

from slukd.data.fingerprint import DataChangedError
from slukd.data.synth_slu import CorpusError
from slukd.experiment import main_guard
from slukd.utils.run import IncompatibleRunError


@pytest.mark.parametrize("exc", [DataChangedError("train.jsonl changed; rerun with --data_changed=restart|keep"),
                                 IncompatibleRunError("scenario.json: the run folder was made with another task split"),
                                 CorpusError("corpus folder holds something else")])  # fmt: skip
def test_user_errors_are_one_line(exc, capsys):
    def main_fn(argv):
        raise exc

    assert main_guard(main_fn, ["row.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"error: {exc}" in err and "Traceback" not in err
    with pytest.raises(type(exc)):  # --verbose keeps the traceback
        main_guard(main_fn, ["row.yaml", "--verbose"])


def test_a_bug_is_not_hidden():
    def main_fn(argv):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        main_guard(main_fn, ["row.yaml"])
