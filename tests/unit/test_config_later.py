"""slukd.config.later_task_keys: a {later} mark belongs to the setting, wherever in the chain it is declared."""

from __future__ import annotations

from slukd.config import later_task_keys


def test_a_row_that_sets_a_marked_setting_again_keeps_the_mark(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "memory_fraction: 0.01   # [float] {later} share of the train set\nlr: 0.001   # [float] learning rate\n"
    )
    (tmp_path / "row.yaml").write_text(
        "base: base.yaml\nmemory_fraction: 0.05   # five percent\nlr: 0.002   # [float] a comment without the mark\n"
        "extra: 1   # {later} a row's own later setting\n"
    )
    assert later_task_keys(tmp_path / "row.yaml") == {"memory_fraction", "extra"}
    assert later_task_keys(tmp_path / "base.yaml") == {"memory_fraction"}
