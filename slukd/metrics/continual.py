"""Continual-learning metrics from a results matrix.

``R[i][j]`` (shape T x T) is the metric on the test set of task ``j`` after training through task ``i`` (0-based).
Entries with ``j > i`` (tasks not seen yet) may be NaN; entries with ``j <= i`` must be finite.

The metric may be higher-is-better (accuracy, SLU-F1) or lower-is-better (WER). Averages (``A_i``, Avg, Last, AIA)
are plain means in the metric's own units. Transfer and forgetting figures are *oriented* so that their sign means the
same thing whatever the metric direction: BWT > 0 and FWT > 0 are improvements, forgetting > 0 and
intransigence > 0 are losses. With ``s = +1`` (higher is better) or ``s = -1`` (lower is better):

* ``A_i = mean_{j<=i} R[i][j]`` — average over the seen tasks after step i (``step_avg``);
* ``Avg = mean_{i<T} A_i`` — the SLU papers' "Avg" (average over steps of the seen-task average);
* ``Last = A_{T-1} = mean_j R[T-1][j]``;
* ``AIA`` — average incremental accuracy (Rebuffi et al., iCaRL): with test-set sizes ``n_j`` given,
  ``AIA = mean_i (sum_{j<=i} n_j R[i][j] / sum_{j<=i} n_j)`` (for accuracy: the accuracy on the union of the seen
  test sets); without sizes it equals Avg;
* ``BWT = mean_{j<T-1} s * (R[T-1][j] - R[j][j])`` (Lopez-Paz & Ranzato, GEM);
* forgetting, the max-based definition of Chaudhry et al. (RWalk, 2018), after the last step:
  ``f_j = max_{j<=l<T-1} s * R[l][j] - s * R[T-1][j]`` (best earlier value minus final value), and
  ``F = mean_{j<T-1} f_j``; ``forgetting_per_step[k-1] = mean_{j<k} (max_{j<=l<k} s R[l][j] - s R[k][j])``;
* ``FWT = mean_{1<=j<T} s * (R[j-1][j] - b_j)`` (GEM), with ``b_j`` the ``baseline`` (e.g. a randomly initialised
  model) on task j; needs the entries just above the diagonal, else it is None;
* intransigence (Chaudhry et al.): ``I_k = s * (joint_k - R[k][k])``, ``I = mean_k I_k``, with ``joint_k`` the metric
  on task k of a reference model trained jointly on the data of tasks 0..k.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _as_matrix(R: Any) -> np.ndarray:
    try:
        m = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"results matrix is not numeric: {err}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"results matrix must be square T x T with T >= 1, got shape {m.shape}")
    for i in range(m.shape[0]):
        for j in range(i + 1):
            if not math.isfinite(m[i, j]):
                raise ValueError(f"results matrix entry R[{i}][{j}] (task {j} after step {i}) is {m[i, j]}")
    return m


def _as_vector(v: Any, T: int, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (T,):
        raise ValueError(f"{name} must have one value per task ({T}), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values: {a.tolist()}")
    return a


def step_averages(R: Any, task_sizes: Sequence[float] | None = None) -> list[float]:
    """``A_i = mean_{j<=i} R[i][j]`` for each step i (weighted by ``task_sizes`` n_j when given)."""
    m = _as_matrix(R)
    T = m.shape[0]
    w = np.ones(T) if task_sizes is None else _as_vector(task_sizes, T, "task_sizes")
    if np.any(w <= 0):
        raise ValueError(f"task_sizes must be positive, got {list(w)}")
    return [float(np.dot(m[i, : i + 1], w[: i + 1]) / w[: i + 1].sum()) for i in range(T)]


def forgetting_per_task(R: Any, higher_is_better: bool = True, step: int | None = None) -> list[float]:
    """Chaudhry et al. forgetting of each task j < k after step k (default the last):
    ``f_j = max_{j<=l<k} s R[l][j] - s R[k][j]`` (s = +1 higher-is-better, -1 lower-is-better)."""
    m = _as_matrix(R)
    k = m.shape[0] - 1 if step is None else step
    if not 0 <= k < m.shape[0]:
        raise ValueError(f"step {k} outside 0..{m.shape[0] - 1}")
    s = 1.0 if higher_is_better else -1.0
    return [float(max(s * m[l, j] for l in range(j, k)) - s * m[k, j]) for j in range(k)]


@dataclass(frozen=True)
class ContinualMetrics:
    """All continual-learning figures of one results matrix (see the module docstring for the formulas)."""

    higher_is_better: bool
    n_tasks: int
    step_avg: list[float]
    avg: float
    last: float
    aia: float
    bwt: float | None
    forgetting: float | None
    forgetting_tasks: list[float]
    forgetting_per_step: list[float]
    fwt: float | None
    intransigence: float | None
    intransigence_tasks: list[float] | None

    @classmethod
    def from_matrix(
        cls,
        R: Any,
        higher_is_better: bool = True,
        joint: Sequence[float] | None = None,
        baseline: Sequence[float] | None = None,
        task_sizes: Sequence[float] | None = None,
    ) -> ContinualMetrics:
        """Compute every figure; BWT / forgetting need T >= 2, FWT needs ``baseline`` and finite ``R[j-1][j]``,
        intransigence needs ``joint``."""
        m = _as_matrix(R)
        T = m.shape[0]
        s = 1.0 if higher_is_better else -1.0
        step_avg = step_averages(m)
        aia = float(np.mean(step_averages(m, task_sizes))) if task_sizes is not None else float(np.mean(step_avg))
        bwt = forgetting = None
        f_tasks: list[float] = []
        f_steps: list[float] = []
        if T >= 2:
            bwt = float(np.mean([s * (m[T - 1, j] - m[j, j]) for j in range(T - 1)]))
            f_tasks = forgetting_per_task(m, higher_is_better)
            forgetting = float(np.mean(f_tasks))
            f_steps = [float(np.mean(forgetting_per_task(m, higher_is_better, k))) for k in range(1, T)]
        fwt = None
        if baseline is not None and T >= 2:
            b = _as_vector(baseline, T, "baseline")
            above = [m[j - 1, j] for j in range(1, T)]
            if all(math.isfinite(x) for x in above):
                fwt = float(np.mean([s * (m[j - 1, j] - b[j]) for j in range(1, T)]))
            else:
                logger.warning("FWT needs R[j-1][j] (tasks evaluated before training on them); they are NaN: no FWT")
        intr = intr_tasks = None
        if joint is not None:
            a_star = _as_vector(joint, T, "joint")
            intr_tasks = [float(s * (a_star[k] - m[k, k])) for k in range(T)]
            intr = float(np.mean(intr_tasks))
        return cls(
            higher_is_better=higher_is_better,
            n_tasks=T,
            step_avg=step_avg,
            avg=float(np.mean(step_avg)),
            last=step_avg[-1],
            aia=aia,
            bwt=bwt,
            forgetting=forgetting,
            forgetting_tasks=f_tasks,
            forgetting_per_step=f_steps,
            fwt=fwt,
            intransigence=intr,
            intransigence_tasks=intr_tasks,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists and floats / None), JSON-serialisable."""
        return asdict(self)
