"""slukd.data.audio.duration_outliers: clips much longer than the median are flagged and logged."""

from __future__ import annotations

import logging

import pytest

from slukd.data.audio import duration_outliers


def test_flags_clips_longer_than_factor_times_median(caplog):
    durations = {f"c{i}": 2.0 for i in range(9)} | {"long": 9.0, "longer": 30.0, "edge": 8.0, "unknown": -1.0}
    with caplog.at_level(logging.WARNING, logger="slukd.data.audio"):
        out = duration_outliers(durations, factor=4.0)
    assert out["median"] == 2.0 and out["threshold"] == 8.0  # the -1 (unknown) is not counted
    assert list(out["outliers"].items()) == [("longer", 30.0), ("long", 9.0)]  # longest first; 8.0 is not > 8.0
    assert "2 of 12 clips are longer than 8.0 s" in caplog.text
    assert "longer (30.0 s), long (9.0 s)" in caplog.text


def test_abs_max_top_and_nothing_to_flag(caplog):
    durations = {"a": 1.0, "b": 1.2, "c": 5.0, "d": 6.0, "e": 1.1}
    out = duration_outliers(durations, factor=10.0, abs_max=4.0, top=1)
    assert out["threshold"] == 4.0 and out["outliers"] == {"d": 6.0, "c": 5.0}
    assert "d (6.0 s)" in caplog.text and "c (5.0 s)" not in caplog.text  # only the longest is named
    caplog.clear()
    assert duration_outliers({"a": 1.0, "b": 1.5})["outliers"] == {}
    assert duration_outliers({}) == {"median": 0.0, "threshold": float("inf"), "outliers": {}}
    assert "longer than" not in caplog.text


def test_bad_input_names_the_clip():
    with pytest.raises(ValueError, match="'x'"):
        duration_outliers({"a": 1.0, "x": float("nan")})
    with pytest.raises(ValueError, match="factor"):
        duration_outliers({"a": 1.0}, factor=0.0)
    with pytest.raises(ValueError, match="abs_max"):
        duration_outliers({"a": 1.0}, abs_max=-1.0)
