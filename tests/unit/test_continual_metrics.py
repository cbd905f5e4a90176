"""Continual-learning metrics on hand-computed results matrices (higher- and lower-is-better)."""

from __future__ import annotations

import json
import math

import pytest

from slukd.metrics.continual import ContinualMetrics, forgetting_per_task, step_averages

NAN = math.nan
# accuracy after step i (rows) on task j (columns); task 0 improves after step 1 (95 > 90), so max-based forgetting
# (35) differs from the diagonal-based drop (30).
ACC = [
    [90.0, NAN, NAN],
    [95.0, 80.0, NAN],
    [60.0, 75.0, 85.0],
]


def test_accuracy_matrix_hand_computed():
    m = ContinualMetrics.from_matrix(ACC)
    assert m.n_tasks == 3
    assert m.step_avg == pytest.approx([90.0, 87.5, 220 / 3])
    assert m.avg == pytest.approx((90.0 + 87.5 + 220 / 3) / 3)  # 83.6111
    assert m.last == pytest.approx(220 / 3)
    assert m.aia == pytest.approx(m.avg)  # no task sizes
    assert m.bwt == pytest.approx(((60 - 90) + (75 - 80)) / 2)  # -17.5
    assert m.forgetting_tasks == pytest.approx([95 - 60, 80 - 75])
    assert m.forgetting == pytest.approx(20.0)
    assert m.forgetting_per_step == pytest.approx([90 - 95, 20.0])  # after step 1: task 0 got better (-5)
    assert m.fwt is None and m.intransigence is None


def test_task_size_weighted_average_incremental_accuracy():
    m = ContinualMetrics.from_matrix(ACC, task_sizes=[100, 300, 100])
    # step 1: (95*100 + 80*300) / 400 = 83.75; step 2: (60*100 + 75*300 + 85*100) / 500 = 74
    assert m.aia == pytest.approx((90 + 83.75 + 74) / 3)
    assert m.avg == pytest.approx((90.0 + 87.5 + 220 / 3) / 3)  # unweighted Avg unchanged
    assert step_averages(ACC, [100, 300, 100]) == pytest.approx([90, 83.75, 74])


def test_intransigence_and_forward_transfer():
    m = ContinualMetrics.from_matrix(ACC, joint=[90.0, 85.0, 88.0])
    assert m.intransigence_tasks == pytest.approx([0.0, 5.0, 3.0])
    assert m.intransigence == pytest.approx(8 / 3)
    full = [[90.0, 10.0, 0.0], [95.0, 80.0, 20.0], [60.0, 75.0, 85.0]]  # tasks evaluated before they are trained
    m = ContinualMetrics.from_matrix(full, baseline=[0.0, 5.0, 5.0])
    assert m.fwt == pytest.approx(((10 - 5) + (20 - 5)) / 2)
    assert m.last == pytest.approx(220 / 3)  # entries above the diagonal never enter the averages
    assert ContinualMetrics.from_matrix(ACC, baseline=[0.0, 5.0, 5.0]).fwt is None  # unseen tasks not evaluated


# WER (lower is better): task 0 gets worse, task 1 improves after training on task 2.
WER = [
    [10.0, NAN, NAN],
    [15.0, 12.0, NAN],
    [20.0, 11.0, 9.0],
]


def test_lower_is_better_orientation():
    m = ContinualMetrics.from_matrix(WER, higher_is_better=False, joint=[9.0, 10.0, 9.0])
    assert m.step_avg == pytest.approx([10.0, 13.5, 40 / 3])
    assert m.avg == pytest.approx((10 + 13.5 + 40 / 3) / 3) and m.last == pytest.approx(40 / 3)
    assert m.bwt == pytest.approx((-(20 - 10) + -(11 - 12)) / 2)  # -4.5: positive would mean improvement
    assert m.forgetting_tasks == pytest.approx([20 - 10, 11 - 12])  # final minus best (lowest) earlier WER
    assert m.forgetting == pytest.approx(4.5)
    assert m.intransigence_tasks == pytest.approx([1.0, 2.0, 0.0])
    assert forgetting_per_task(WER, higher_is_better=False, step=1) == pytest.approx([5.0])


def test_single_task_and_serialisation():
    m = ContinualMetrics.from_matrix([[0.7]], joint=[0.8])
    assert (m.avg, m.last, m.bwt, m.forgetting) == (pytest.approx(0.7), pytest.approx(0.7), None, None)
    assert m.intransigence == pytest.approx(0.1)
    d = json.loads(json.dumps(ContinualMetrics.from_matrix(ACC).to_dict()))
    assert d["forgetting"] == pytest.approx(20.0) and d["higher_is_better"] is True


def test_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        ContinualMetrics.from_matrix([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"R\[2\]\[1\]"):
        ContinualMetrics.from_matrix([[1.0, NAN, NAN], [1.0, 1.0, NAN], [1.0, NAN, 1.0]])
    with pytest.raises(ValueError, match="joint must have one value per task"):
        ContinualMetrics.from_matrix(ACC, joint=[1.0, 2.0])
    with pytest.raises(ValueError, match="task_sizes must be positive"):
        step_averages(ACC, [1, 0, 1])
    with pytest.raises(ValueError, match="not numeric"):
        ContinualMetrics.from_matrix([["a"]])
