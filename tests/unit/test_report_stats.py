"""Paired and Welch intervals and p-values against hand computations, and the verdict words."""

from __future__ import annotations

import math

import pytest

from slukd.report.stats import against_reference, paired, verdict, welch


def test_paired_interval_and_p_by_hand():
    # d = a - b per seed = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3); t_{0.975, 2} = 4.302653 (textbook table)
    d = paired({0: 10.0, 1: 12.0, 2: 14.0, 7: 99.0}, {0: 9.0, 1: 10.0, 2: 11.0})  # seed 7 has no partner
    half = 4.302653 * 1 / math.sqrt(3)
    assert d.kind == "paired" and d.n == (3,) and d.df == 2
    assert d.mean == pytest.approx(2.0)
    assert (d.lo, d.hi) == (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    # df = 2: the t CDF is 1/2 + t / (2 sqrt(t^2 + 2)), so p = 1 - t / sqrt(t^2 + 2) with t = 2 sqrt(3)
    assert d.p == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-9)
    assert verdict(d) == "not shown with 3 seeds"  # the interval [-0.48, 4.48] includes 0


def test_paired_five_seeds_textbook_quantile_and_directions():
    # d = 4, 5, 6, 5, 5: mean 5, sd sqrt(0.5), se sqrt(0.1); t_{0.975, 4} = 2.776445
    a = {s: 50.0 + x for s, x in enumerate([4, 5, 6, 5, 5])}
    d = paired(a, dict.fromkeys(range(5), 50.0))
    assert d.lo == pytest.approx(5 - 2.776445 * math.sqrt(0.1), abs=1e-5)
    assert d.hi == pytest.approx(5 + 2.776445 * math.sqrt(0.1), abs=1e-5)
    assert verdict(d) == "holds" and verdict(d, -1) == "does not hold"
    assert "95% CI +4.12 to +5.88" in d.text() and "paired over 5 seeds" in d.text()


def test_welch_matches_its_formula_and_scipy():
    from scipy import stats

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    d = welch(a, b)
    # var(a) = 5/3, var(b) = 4: se^2 = 5/12 + 4/3 = 1.75; df = 1.75^2 / ((5/12)^2 / 3 + (4/3)^2 / 2)
    df = 1.75**2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert d.df == pytest.approx(df) and d.df == pytest.approx(3.2347, abs=1e-4)
    half = stats.t.ppf(0.975, df) * math.sqrt(1.75)
    assert d.mean == pytest.approx(-1.5) and d.lo == pytest.approx(-1.5 - half) and d.hi == pytest.approx(-1.5 + half)
    assert d.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert verdict(d, -1).startswith("not shown")


def test_too_few_seeds_have_no_interval():
    one = paired({0: 3.0}, {0: 1.0})
    assert not one.shown and one.mean == 2.0 and verdict(one) == "not shown with 1 seed(s)"
    assert not welch([1.0], [2.0, 3.0]).shown
    assert "no interval" in one.text()
    exact = paired({0: 3.0, 1: 4.0}, {0: 1.0, 1: 2.0})  # every difference is 2: no spread
    assert (exact.lo, exact.hi, exact.p) == (2.0, 2.0, 0.0) and verdict(exact) == "holds"


def test_against_a_fixed_reference_is_the_one_sample_interval():
    from scipy import stats

    a = [118.0, 121.0, 120.0, 119.0, 122.0]  # mean 120, var 2.5, se sqrt(0.5); t_{0.975, 4} = 2.776445
    d = against_reference(a, 119.0)
    assert d.kind == "fixed" and d.n == (5,) and d.df == 4 and d.mean == pytest.approx(1.0)
    assert (d.lo, d.hi) == (pytest.approx(1 - 2.776445 * math.sqrt(0.5), abs=1e-5),
                            pytest.approx(1 + 2.776445 * math.sqrt(0.5), abs=1e-5))  # fmt: skip
    assert d.p == pytest.approx(stats.ttest_1samp(a, 119.0).pvalue)
    assert verdict(d, -1) == "not shown with 5 seeds" and "5 runs against one fixed value" in d.text()
    assert not against_reference([120.0], 119.0).shown
