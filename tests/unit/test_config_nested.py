"""Nested settings: dotted overrides reach the object they configure, and their values are checked before any
work like top-level ones (type from the base's value or its declared [rule])."""

import pytest

from slukd.config import HparamValueError, load_hparams
from tests.conftest import REPO

CAP = REPO / "hparams" / "captioning_kd"
SLU = REPO / "hparams" / "slurp_incremental"


def test_dotted_overrides_reach_the_object():
    hp, _ = load_hparams(CAP / "student_seqkd.yaml", ["--student_model.d_model=128", "--student_model.cnn.width=0.5",
                                                       "--metric_options.spice_corenlp_dir=/jars"])  # fmt: skip
    assert hp["student_model"].keywords["d_model"] == 128 and hp["student_model"].keywords["cnn"]["width"] == 0.5
    assert hp["metric_options"]["spice_corenlp_dir"] == "/jars"


@pytest.mark.parametrize(("row", "override", "expected"), [
    (CAP / "teacher.yaml", "--teacher_model.d_model=big", "'teacher_model.d_model' must be int, got 'big'"),
    (CAP / "student_seqkd.yaml", "--student_model.cnn.width=wide", "'student_model.cnn.width' must be float"),
    (CAP / "student_seqkd.yaml", "--metric_options.meteor=yes", "'metric_options.meteor' must be bool"),
])  # fmt: skip
def test_nested_values_are_checked_before_any_work(row, override, expected):
    with pytest.raises(HparamValueError, match=expected):
        load_hparams(row, [override])


def test_every_row_loads_on_the_paper_base():
    for folder in (CAP, SLU):
        for path in sorted(p for p in folder.glob("*.yaml") if not p.stem.startswith("base")):
            hp, _ = load_hparams(path, "base: base_paper.yaml")
            assert hp["row"] == path.stem
