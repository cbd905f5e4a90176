"""Rehearsal memory for class-incremental learning.

The memory stores item IDs per class, each class's list in priority order (the first ``m`` items are the best ``m``
exemplars), so shrinking a class keeps a prefix. Budget (``rule``):

- ``fixed_quota`` (the SLU paper's rule, its code's ``fixed_memory``): every class has the same quota from the first
  task on and keeps it; room reserved for classes not seen yet is never lent to the classes seen so far, so the
  memory grows by one quota per new class. The quota is ``per_class=q``, or, with ``fraction=f``,
  ``q = floor(f * N / S)`` for ``N = total_items`` training items and ``S = n_classes`` classes in the corpus (on
  SLURP: 1% of about 126,000 training items over 18 scenarios = 70 per scenario). After the last task the memory
  holds ``S * q <= f * N`` items.
- ``shared_budget`` (iCaRL's rule; needs ``fraction``): a fixed total of ``K = round(f * N)`` items shared equally by
  the classes seen so far: ``K // n`` per class for ``n`` seen classes, the remainder going to the first classes in
  sorted order; old classes shrink as new ones arrive.

Selection:

- ``random``: a seeded permutation of the class's candidates;
- ``herding`` (iCaRL, Rebuffi et al. 2017) on L2-normalised encoder features ``x_i`` (``[N, D]``): with class mean
  ``mu = mean_i x_i``, the k-th exemplar is ``argmin_i || mu - (x_i + sum_{j<k} x_{p_j}) / k ||`` over the items not
  yet chosen.

Updated once at the end of each task with that task's training items; saved to / loaded from JSON.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)


def herding_order(features: torch.Tensor, k: int | None = None) -> list[int]:
    """iCaRL herding: indices of the ``k`` rows of ``features`` ([N, D]) in selection order (all rows by default).

    Rows are L2-normalised first; the k-th choice minimises the distance between the class mean and the mean of the
    chosen rows plus the candidate. Ties go to the lowest index.
    """
    if features.dim() != 2:
        raise ValueError(f"herding expects features of shape [N, D], got {tuple(features.shape)}")
    n = features.shape[0]
    k = n if k is None else min(k, n)
    x = torch.nn.functional.normalize(features.double(), dim=1)
    mu = x.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(n, dtype=torch.bool)
    for step in range(1, k + 1):
        dist = ((mu.unsqueeze(0) - (running.unsqueeze(0) + x) / step) ** 2).sum(dim=1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))
        chosen.append(i)
        available[i] = False
        running += x[i]
    return chosen


#: the budget rules (see the module docstring)
RULES = ("fixed_quota", "shared_budget")


class RehearsalMemory:
    """Per-class exemplar store (IDs only; the data stays in the manifests); ``rule``: see the module docstring."""

    def __init__(
        self,
        selection: str = "random",
        per_class: int | None = None,
        fraction: float | None = None,
        total_items: int | None = None,
        seed: int = 0,
        rule: str = "fixed_quota",
        n_classes: int | None = None,
    ) -> None:
        if selection not in ("random", "herding"):
            raise ValueError(f"memory selection must be 'random' or 'herding', got {selection!r}")
        if rule not in RULES:
            raise ValueError(f"memory rule must be one of {RULES}, got {rule!r}")
        if (per_class is None) == (fraction is None):
            raise ValueError("give exactly one of per_class (items per class) or fraction (share of the train set)")
        if per_class is not None and per_class < 0:
            raise ValueError(f"per_class must be >= 0, got {per_class}")
        if rule == "shared_budget" and fraction is None:
            raise ValueError("the shared_budget memory rule shares a fraction of the train set: give fraction")
        if fraction is not None:
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"fraction must be in [0, 1], got {fraction}")
            if total_items is None or total_items < 0:
                raise ValueError("fraction needs total_items (the number of training items of all tasks)")
            if rule == "fixed_quota" and (n_classes is None or n_classes < 1):
                raise ValueError("the fixed_quota rule with a fraction needs n_classes (the classes of the corpus)")
        self.selection = selection
        self.per_class = per_class
        self.fraction = fraction
        self.total_items = total_items
        self.seed = seed
        self.rule = rule
        self.n_classes = n_classes
        self.classes: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ budget
    @property
    def quota(self) -> int | None:
        """Items per class under a fixed per-class quota (``per_class``, or ``floor(f * N / S)`` under
        ``fixed_quota``); ``None`` under ``shared_budget``."""
        if self.per_class is not None:
            return self.per_class
        if self.rule == "shared_budget":
            return None
        # floor(f * N / S), with a tolerance so that e.g. 0.01 * 12600 / 18 = 70 is not 69.999...
        return int(math.floor(self.fraction * self.total_items / self.n_classes + 1e-9))

    @property
    def budget(self) -> int | None:
        """Total capacity: ``round(f * N)`` under ``shared_budget``; ``S * quota`` under ``fixed_quota`` with a
        fraction (reached once every class is seen); ``None`` for an explicit per-class count."""
        if self.fraction is None:
            return None
        if self.rule == "shared_budget":
            return int(round(self.fraction * self.total_items))
        return self.quota * self.n_classes

    def quotas(self, classes: Sequence[str]) -> dict[str, int]:
        """Items allowed per class when ``classes`` are stored."""
        names = sorted(classes)
        q = self.quota
        if q is not None:
            return {c: q for c in names}
        if not names:
            return {}
        base, extra = divmod(self.budget, len(names))
        return {c: base + (1 if i < extra else 0) for i, c in enumerate(names)}

    def summary(self) -> dict[str, Any]:
        """What the memory holds now: ``{"rule", "quota_per_class" (None under shared_budget), "capacity" (total
        items the rule allows once every class is seen; None for an explicit per-class count), "total",
        "per_class": {class: items}}``."""
        return {
            "rule": "per_class" if self.per_class is not None else self.rule,
            "quota_per_class": self.quota,
            "capacity": self.budget,
            "total": len(self),
            "per_class": {c: len(v) for c, v in sorted(self.classes.items())},
        }

    # ------------------------------------------------------------------ update
    def update(
        self,
        ids: Sequence[str],
        labels: Sequence[str],
        features: torch.Tensor | None = None,
        task: int = 0,
    ) -> None:
        """Add the classes of one task from its training items and shrink the old ones to the new quota.

        ``ids``/``labels`` list the candidates (one per item); ``features`` ([N, D], same order) is required for
        herding. A class already in memory is re-selected from the given candidates.
        """
        if len(ids) != len(labels):
            raise ValueError(f"memory update: {len(ids)} ids but {len(labels)} labels")
        if len(set(ids)) != len(ids):
            raise ValueError("memory update: duplicate item IDs among the candidates")
        if self.selection == "herding":
            if features is None:
                raise ValueError("herding selection needs the candidates' features")
            if features.shape[0] != len(ids):
                raise ValueError(f"memory update: {len(ids)} ids but {features.shape[0]} feature rows")
        by_class: dict[str, list[int]] = {}
        for i, lab in enumerate(labels):
            by_class.setdefault(lab, []).append(i)
        quotas = self.quotas(set(self.classes) | set(by_class))
        for c in sorted(self.classes):
            if c not in by_class:
                self.classes[c] = self.classes[c][: quotas[c]]
        for c in sorted(by_class):
            idx = by_class[c]
            q = quotas[c]
            if self.selection == "herding":
                order = herding_order(features[idx], q)
                picked = [idx[j] for j in order]
            else:
                rng = random.Random(f"{self.seed}:{task}:{c}")
                perm = list(idx)
                rng.shuffle(perm)
                picked = perm[:q]
            self.classes[c] = [ids[i] for i in picked]
        logger.info(
            "memory after task %d: %d items over %d classes (%s)",
            task + 1,
            len(self),
            len(self.classes),
            ", ".join(f"{c}={len(v)}" for c, v in sorted(self.classes.items())),
        )

    # ------------------------------------------------------------------ access
    def ids(self) -> list[str]:
        """All stored IDs, classes in sorted order."""
        return [i for c in sorted(self.classes) for i in self.classes[c]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.classes.values())

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {
            "selection": self.selection,
            "per_class": self.per_class,
            "fraction": self.fraction,
            "total_items": self.total_items,
            "seed": self.seed,
            "rule": self.rule,
            "n_classes": self.n_classes,
            "classes": {c: list(v) for c, v in sorted(self.classes.items())},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the memory as JSON atomically."""
        return atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> RehearsalMemory:
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            mem = cls(
                selection=state["selection"],
                per_class=state["per_class"],
                fraction=state["fraction"],
                total_items=state["total_items"],
                seed=state["seed"],
                # files written before the rule existed used the shared budget for a fraction
                rule=state.get("rule", "shared_budget" if state["fraction"] is not None else "fixed_quota"),
                n_classes=state.get("n_classes"),
            )
            classes = state["classes"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a rehearsal memory file ({err})") from err
        if not isinstance(classes, dict):
            raise ValueError(f"{path}: field 'classes' must map class -> list of IDs")
        mem.classes = {str(c): [str(i) for i in v] for c, v in classes.items()}
        return mem


def memory_budget(
    selection: str,
    per_class: int | None,
    fraction: float | None,
    total_items: int,
    seed: int,
    rule: str = "fixed_quota",
    n_classes: int | None = None,
) -> RehearsalMemory | None:
    """The empty memory of a run, or None when ``selection`` is "none". Exactly one of ``per_class`` (items per
    class) and ``fraction`` (share of the training set) must be given: a row that names a memory size (e.g. 5%)
    must never be silently overridden by the other setting. ``rule``: ``fixed_quota`` (the paper's: a quota per
    class of ``per_class`` or ``floor(fraction * total_items / n_classes)``) or ``shared_budget`` (``round(fraction
    * total_items)`` shared by the classes seen so far); see the module docstring."""
    from slukd.config import HparamValueError

    if selection == "none":
        return None
    if (per_class is None) == (fraction is None):
        given = "both" if per_class is not None else "neither"
        raise HparamValueError(
            f"memory: {given} of memory_per_class ({per_class}) and memory_fraction ({fraction}) given; set exactly "
            "one (e.g. --memory_per_class=8 --memory_fraction=null)"
        )
    if rule not in RULES:
        raise HparamValueError(f"memory_rule: {rule!r} is not one of {', '.join(RULES)}")
    if rule == "shared_budget" and fraction is None:
        raise HparamValueError(
            f"memory_rule: shared_budget shares memory_fraction of the train set, but memory_fraction is null "
            f"(memory_per_class={per_class}); use memory_rule=fixed_quota with memory_per_class"
        )
    mem = RehearsalMemory(selection=selection, per_class=per_class, fraction=fraction, total_items=total_items,
                          seed=seed, rule=rule, n_classes=n_classes)  # fmt: skip
    if mem.quota == 0:
        logger.warning(
            "memory: the %s rule gives 0 items per class (memory_fraction %s x %d training items / %s classes < 1); "
            "the memory stays empty",
            rule, fraction, total_items, n_classes,
        )  # fmt: skip
    return mem
