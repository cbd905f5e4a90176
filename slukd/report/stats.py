"""Differences between table rows with their 95% intervals and p-values, and the verdict a claim may print.

Two rows' runs are compared in one of two ways:

- **paired** (:func:`paired`): rows of one continual split share task 1 within a seed (same data, same first model),
  so seed ``s`` of row A is compared with seed ``s`` of row B. With ``d_s = a_s - b_s`` over the ``n`` common seeds,
  ``mean = sum(d) / n``, ``sd = sqrt(sum((d - mean)^2) / (n - 1))``, ``se = sd / sqrt(n)``, ``df = n - 1``;
  the 95% interval is ``mean ± t_{0.975, df} se`` and the two-sided p-value ``2 (1 - T_df(|mean| / se))``.
- **Welch** (:func:`welch`): where pairing does not hold (the joint row against continual rows; captioning students
  against their teacher), ``mean = mean(a) - mean(b)``, ``se = sqrt(va / na + vb / nb)`` with sample variances,
  ``df = se^4 / ((va / na)^2 / (na - 1) + (vb / nb)^2 / (nb - 1))`` (Welch-Satterthwaite); interval and p-value as
  above with that df.
- **against a fixed reference** (:func:`against_reference`): where every run of a row was trained from one and the
  same model (captioning students distilled from a single teacher run), that model's score is a fixed value ``r``,
  not a sample: ``mean = mean(a) - r``, ``se = sd(a) / sqrt(na)``, ``df = na - 1`` (the one-sample t-interval; it
  is Welch's interval with ``vb = 0``). It says whether the row reaches *this* teacher, not teachers in general.

A difference needs at least 2 values per side (2 common seeds when paired); with fewer it has no interval.
:func:`verdict` turns a difference into the words a claim prints: ``holds`` only when the whole interval lies on the
claimed side of 0, ``does not hold`` when it lies wholly on the other side, else ``not shown with n seeds``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Diff", "paired", "welch", "against_reference", "verdict", "verdict_all", "missing_rows", "LEVEL"]

#: two-sided confidence level of every interval
LEVEL = 0.95


@dataclass(frozen=True)
class Diff:
    """A difference of means ``a - b`` with its 95% interval ``[lo, hi]`` and two-sided p-value (``None`` without
    an interval: fewer than 2 values a side). ``n``: common seeds (paired), the two run counts (Welch) or the row's run
    count (fixed reference)."""

    kind: str  # "paired" | "Welch" | "fixed"
    mean: float
    lo: float | None
    hi: float | None
    p: float | None
    df: float | None
    n: tuple[int, ...]

    @property
    def shown(self) -> bool:
        return self.lo is not None

    def text(self, unit: str = "") -> str:
        """``+4.20 (95% CI +1.02 to +7.38, p = 0.031, paired over 3 seeds)`` (``p < 0.001`` below 0.001)."""
        if not self.shown:
            how = {"paired": f"{self.n[0]} common seed(s)", "fixed": f"{self.n[0]} run(s)"}.get(
                self.kind, f"{self.n[0]} and {self.n[-1]} runs"
            )
            return f"{self.mean:+.2f}{unit} (no interval: {how})"
        how = {"paired": f"paired over {self.n[0]} seeds", "fixed": f"{self.n[0]} runs against one fixed value"}.get(
            self.kind, f"Welch, {self.n[0]} vs {self.n[-1]} runs"
        )
        return f"{self.mean:+.2f}{unit} (95% CI {self.lo:+.2f} to {self.hi:+.2f}, {_p(self.p)}, {how})"


def _p(p: float | None) -> str:
    if p is None:
        return "p -"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _interval(mean: float, se: float, df: float, n: tuple[int, ...], kind: str) -> Diff:
    from scipy import stats

    if se == 0.0:  # every difference equal: no spread at all
        p = 1.0 if mean == 0.0 else 0.0
        return Diff(kind, mean, mean, mean, p, df, n)
    t = stats.t.ppf(0.5 + LEVEL / 2, df)
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return Diff(kind, mean, mean - t * se, mean + t * se, p, df, n)


def _mean_var(x: Sequence[float]) -> tuple[float, float]:
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)


def paired(a: Mapping[object, float], b: Mapping[object, float]) -> Diff:
    """``a - b`` paired by key (seed) over the keys both have (see the module docstring)."""
    common = sorted(set(a) & set(b), key=str)
    d = [float(a[k]) - float(b[k]) for k in common]
    n = len(d)
    if n == 0:
        return Diff("paired", float("nan"), None, None, None, None, (0,))
    if n < 2:
        return Diff("paired", d[0], None, None, None, None, (1,))
    m, var = _mean_var(d)
    return _interval(m, math.sqrt(var / n), n - 1, (n,), "paired")


def welch(a: Sequence[float], b: Sequence[float]) -> Diff:
    """``mean(a) - mean(b)`` for independent samples, Welch's interval (see the module docstring)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return Diff("Welch", float("nan"), None, None, None, None, (na, nb))
    mean = sum(a) / na - sum(b) / nb
    if na < 2 or nb < 2:
        return Diff("Welch", mean, None, None, None, None, (na, nb))
    (_, va), (_, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / na, vb / nb
    se2 = qa + qb
    df = se2**2 / (qa**2 / (na - 1) + qb**2 / (nb - 1)) if se2 > 0 else float(na + nb - 2)
    return _interval(mean, math.sqrt(se2), df, (na, nb), "Welch")


def against_reference(a: Sequence[float], ref: float) -> Diff:
    """``mean(a) - ref`` where ``ref`` is one fixed model's score (see the module docstring): the one-sample
    t-interval over ``a``'s runs."""
    a = [float(x) for x in a]
    na = len(a)
    if na == 0:
        return Diff("fixed", float("nan"), None, None, None, None, (0,))
    m = sum(a) / na
    if na < 2:
        return Diff("fixed", m - float(ref), None, None, None, None, (na,))
    _, va = _mean_var(a)
    return _interval(m - float(ref), math.sqrt(va / na), na - 1, (na,), "fixed")


def verdict(diff: Diff, direction: int = 1) -> str:
    """``holds`` when the interval lies wholly on the claimed side of 0 (``direction`` +1: a > b; -1: a < b),
    ``does not hold`` when it lies wholly on the other side, else ``not shown with n seeds``."""
    if not diff.shown:
        return f"not shown with {min(diff.n)} seed(s)"
    lo, hi = (diff.lo, diff.hi) if direction > 0 else (-diff.hi, -diff.lo)  # type: ignore[operator]
    if lo > 0:
        return "holds"
    if hi < 0:
        return "does not hold"
    return f"not shown with {min(diff.n)} seeds"


def verdict_all(diffs: Sequence[tuple[str, Diff]], direction: int = 1) -> str:
    """One verdict from several intervals that must all hold: holds if all hold, does not hold if one is wholly on
    the other side, else not shown (naming the intervals that are not)."""
    verdicts = [(name, d, verdict(d, direction)) for name, d in diffs]
    text = "; ".join(f"{name} {d.text()}" for name, d, _ in verdicts)
    if all(v == "holds" for _, _, v in verdicts):
        return f"holds: {text}"
    against = [name for name, _, v in verdicts if v == "does not hold"]
    if against:
        return f"does not hold ({', '.join(against)} on the other side of 0): {text}"
    n = min(min(d.n) for _, d in diffs)
    return f"not shown with {n} seed{'s' if n != 1 else ''}: {text}"


def missing_rows(rows: Mapping[str, Mapping], *names: str) -> str | None:
    """Why a claim cannot be checked ("not run ..." / "ambiguous ..."), or None when every row is there once."""
    missing = [n for n in names if n not in rows]
    if missing:
        return f"not run ({', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no finished runs)"
    amb = [n for n in names if rows[n].get("ambiguous")]
    if amb:
        return (f"not checked ({', '.join(amb)}: one row name with several settings groups: "
                f"{'; '.join(rows[amb[0]]['ambiguous'])})")  # fmt: skip
    return None
