"""Class-incremental task splits over SLURP scenarios.

A :class:`Scenario` is an ordered list of tasks; each task is a list of class labels (SLURP scenarios). Task ``t``
(0-based) trains on the training items of its own scenarios (plus the rehearsal memory), validates on the devel items
of its own scenarios, and is evaluated on the test items of every scenario seen in tasks ``0..t``.

Orders:
- ``fixed``: the papers' order (most populated scenarios first) for ``slurp3`` / ``slurp6``;
- ``random``: the 18 scenarios (or the classes present in the data) shuffled by a seed, then cut into equal tasks;
- a path: an order file, one task per line, scenarios separated by spaces or commas; ``#`` starts a comment.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SLURP_SCENARIOS: tuple[str, ...] = (
    "calendar",
    "email",
    "general",
    "play",
    "qa",
    "social",
    "alarm",
    "audio",
    "cooking",
    "datetime",
    "iot",
    "lists",
    "music",
    "news",
    "recommendation",
    "takeaway",
    "transport",
    "weather",
)
"""The 18 SLURP scenarios in the papers' fixed order (most populated first)."""

NUM_TASKS = {"slurp3": 3, "slurp6": 6}


class ScenarioError(ValueError):
    """A task split that cannot be built (bad order file, unknown scenario, wrong number of tasks)."""


@dataclass(frozen=True)
class Scenario:
    """An ordered sequence of tasks, each a list of class labels.

    ``name`` identifies the split (e.g. ``slurp3-fixed``); ``tasks[t]`` are the classes new in task ``t``.
    """

    name: str
    tasks: tuple[tuple[str, ...], ...]
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for t, classes in enumerate(self.tasks):
            if not classes:
                raise ScenarioError(f"scenario {self.name}: task {t + 1} has no classes")
            for c in classes:
                if c in seen:
                    raise ScenarioError(f"scenario {self.name}: class {c!r} in tasks {seen[c] + 1} and {t + 1}")
                seen[c] = t
        self._index.update(seen)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def classes(self) -> list[str]:
        """All classes in task order."""
        return [c for task in self.tasks for c in task]

    def task_of(self, label: str) -> int | None:
        """The (0-based) task that introduces ``label``; ``None`` for a class outside the scenario."""
        return self._index.get(label)

    def _check_task(self, t: int) -> None:
        if not 0 <= t < self.n_tasks:
            raise ScenarioError(f"scenario {self.name}: task index {t} out of range 0..{self.n_tasks - 1}")

    def train_indices(self, labels: Sequence[str], t: int) -> list[int]:
        """Indices of rows whose label belongs to task ``t`` (training and validation use this)."""
        self._check_task(t)
        return [i for i, lab in enumerate(labels) if self._index.get(lab) == t]

    def eval_indices(self, labels: Sequence[str], t: int) -> list[int]:
        """Indices of rows whose label belongs to any of the tasks ``0..t`` (evaluation after task ``t``)."""
        self._check_task(t)
        return [i for i, lab in enumerate(labels) if (k := self._index.get(lab)) is not None and k <= t]

    def to_dict(self) -> dict:
        return {"name": self.name, "tasks": [list(t) for t in self.tasks]}


def _cut(classes: Sequence[str], n_tasks: int, name: str) -> tuple[tuple[str, ...], ...]:
    """Cut ``classes`` into ``n_tasks`` consecutive chunks whose sizes differ by at most one (larger first)."""
    if n_tasks < 1 or n_tasks > len(classes):
        raise ScenarioError(f"scenario {name}: cannot split {len(classes)} classes into {n_tasks} tasks")
    base, extra = divmod(len(classes), n_tasks)
    out, start = [], 0
    for t in range(n_tasks):
        size = base + (1 if t < extra else 0)
        out.append(tuple(classes[start : start + size]))
        start += size
    return tuple(out)


def read_order_file(path: str | os.PathLike, known: Iterable[str] | None = None) -> tuple[tuple[str, ...], ...]:
    """Read an order file: one task per line, classes separated by spaces or commas, ``#`` comments, blank lines
    ignored. Errors name the file and line: unknown class (when ``known`` is given), duplicates, no task at all."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"order file {path} does not exist")
    known_set = set(known) if known is not None else None
    tasks: list[tuple[str, ...]] = []
    where: dict[str, int] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        names = [n for n in re.split(r"[,\s]+", line) if n]
        for n in names:
            if known_set is not None and n not in known_set:
                raise ScenarioError(f"{path}:{lineno}: unknown scenario {n!r} (known: {', '.join(sorted(known_set))})")
            if n in where:
                raise ScenarioError(f"{path}:{lineno}: scenario {n!r} already listed on line {where[n]}")
            where[n] = lineno
        tasks.append(tuple(names))
    if not tasks:
        raise ScenarioError(f"{path}: no task found (one task per line, scenarios separated by spaces or commas)")
    return tuple(tasks)


def make_scenario(
    split: str = "slurp3",
    order: str = "fixed",
    seed: int = 0,
    present: Iterable[str] | None = None,
) -> Scenario:
    """Build a task split.

    ``split``: ``slurp3`` (3 tasks of 6 scenarios) or ``slurp6`` (6 of 3), or ``joint`` (one task with everything,
    the offline upper bound). ``order``: ``fixed`` | ``random`` | path to an order file (then ``split`` only names
    it and the file decides the tasks). ``present``: the classes found in the training data; classes of the order
    that the data lacks are dropped with a warning (a built-in corpus may cover a subset of SLURP), and a class of
    the data missing from the order is an error. ``seed`` drives the random order.
    """
    present_list = sorted(set(present)) if present is not None else None
    universe = list(SLURP_SCENARIOS)
    if present_list is not None:
        extra = [c for c in present_list if c not in SLURP_SCENARIOS]
        universe += extra  # non-SLURP class names (a custom corpus) are allowed with random / file orders
    if order not in ("fixed", "random"):
        tasks = read_order_file(order, known=universe if present_list is None else present_list)
        if present_list is not None:
            listed = {c for t in tasks for c in t}
            missing = [c for c in present_list if c not in listed]
            if missing:
                raise ScenarioError(f"order file {order}: scenarios present in the data but not listed: {missing}")
        return Scenario(name=f"{split}-file:{Path(order).name}", tasks=tasks)

    if split == "joint":
        classes = present_list if present_list is not None else list(SLURP_SCENARIOS)
        ordered = [c for c in universe if c in set(classes)]
        return Scenario(name="joint", tasks=(tuple(ordered),))
    if split not in NUM_TASKS:
        raise ScenarioError(f"unknown split {split!r}: expected one of {sorted(NUM_TASKS)} or 'joint'")
    n_tasks = NUM_TASKS[split]
    if order == "fixed":
        if present_list is not None and any(c not in SLURP_SCENARIOS for c in present_list):
            bad = [c for c in present_list if c not in SLURP_SCENARIOS]
            raise ScenarioError(f"fixed order needs SLURP scenarios; the data has others: {bad} (use an order file)")
        full = _cut(list(SLURP_SCENARIOS), n_tasks, split)
        if present_list is not None:
            keep = set(present_list)
            dropped = [c for c in SLURP_SCENARIOS if c not in keep]
            if dropped:
                logger.warning("%s fixed order: scenarios absent from the data are dropped: %s", split, dropped)
            full = tuple(tuple(c for c in task if c in keep) for task in full)
            empty = [i + 1 for i, task in enumerate(full) if not task]
            if empty:
                raise ScenarioError(f"{split} fixed order: tasks {empty} have no scenario present in the data")
        return Scenario(name=f"{split}-fixed", tasks=full)
    classes = present_list if present_list is not None else list(SLURP_SCENARIOS)
    classes = sorted(classes)
    random.Random(seed).shuffle(classes)
    return Scenario(name=f"{split}-random{seed}", tasks=_cut(classes, n_tasks, split))
