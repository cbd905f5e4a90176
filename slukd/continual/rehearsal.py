"""Rehearsal (experience replay) as a continual plugin: a :class:`RehearsalMemory` of past items joins every task's
training set (flagged ``is_memory``, so the KD terms with ``kd_scope: memory`` and the alpha weighting see them).

After task t the memory takes exemplars of task t's classes (``random`` or iCaRL ``herding`` on pooled encoder
features of the trained model) and shrinks the old classes to their quota; it is saved as
``memory_after_task<t+1>.json`` in the run folder. ``selection: none`` turns the plugin off (no memory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from speechbrain.utils.distributed import if_main_process

from slukd.continual.memory import RehearsalMemory, memory_budget
from slukd.continual.plugin import ContinualPlugin, TaskView

__all__ = ["Rehearsal"]


class Rehearsal(ContinualPlugin):
    """Experience replay from a per-class memory.

    Args:
        selection: ``none`` | ``random`` | ``herding``.
        per_class / fraction: the budget (exactly one; see :func:`slukd.continual.memory.memory_budget`).
        rule: ``fixed_quota`` (the paper's: a fixed quota per class, never lent to classes seen earlier) or
            ``shared_budget`` (``round(fraction * n_train)`` shared by the classes seen so far).
        in_training: the memory items join the training set (False: the memory is kept for another use, e.g. A-GEM's
            reference gradients, by a subclass).
    """

    name = "memory"
    stateful = True

    def __init__(
        self,
        selection: str = "random",
        per_class: int | None = None,
        fraction: float | None = None,
        in_training: bool = True,
        rule: str = "fixed_quota",
    ) -> None:
        self.selection, self.per_class, self.fraction, self.rule = selection, per_class, fraction, rule
        self.in_training = bool(in_training)
        self.memory: RehearsalMemory | None = None
        self._fresh: RehearsalMemory | None = None

    @property
    def active(self) -> bool:
        return self.selection != "none"

    @property
    def keeps_memory(self) -> bool:  # type: ignore[override]
        return self.active

    def check(self) -> None:
        """The memory rules of :func:`slukd.continual.memory.memory_budget` (exactly one size, a known rule), on
        placeholder data sizes."""
        memory_budget(self.selection, self.per_class, self.fraction, total_items=10**9, seed=0, rule=self.rule,
                      n_classes=1)  # fmt: skip

    def setup(self, run: dict[str, Any]) -> None:
        """Size the memory from the run (``n_train``: training items of all tasks; ``n_classes``: classes of the
        corpus, for the fixed quota; ``seed``)."""
        self._fresh = memory_budget(self.selection, self.per_class, self.fraction, total_items=run["n_train"],
                                    seed=run["seed"], rule=self.rule, n_classes=run.get("n_classes"))  # fmt: skip
        self.reset()

    def reset(self) -> None:
        fresh = self._fresh
        self.memory = None if fresh is None else RehearsalMemory(
            **{k: v for k, v in fresh.state_dict().items() if k != "classes"}
        )  # fmt: skip

    # the rehearsal memory keeps its historical file name (another plugin's memory: continual/<name>_memory_...)
    def state_path(self, folder: str | os.PathLike, t: int) -> Path:
        if self.name == "memory":
            return Path(folder) / f"memory_after_task{t + 1}.json"
        return Path(folder) / "continual" / f"{self.name}_memory_after_task{t + 1}.json"

    def save(self, folder: str | os.PathLike, t: int) -> None:
        if self.memory is not None:
            self.memory.save(self.state_path(folder, t))

    def restore(self, folder: str | os.PathLike, t: int) -> None:
        if self.memory is None:
            return
        path = self.state_path(folder, t)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: memory of continual method {self.name!r} after task {t + 1} missing")
        self.memory = RehearsalMemory.load(path)

    def train_items(self, task: TaskView) -> list[str]:
        return self.memory.ids() if self.memory is not None and self.in_training else []

    def after_task(self, task: TaskView) -> None:
        """Add task t's classes to the memory (main process; the others read the saved file at the next task)."""
        if self.memory is None or not if_main_process():
            return
        ids, labels = task.candidates()
        feats = task.data.features(task.t, task.model, ids) if self.memory.selection == "herding" else None
        self.memory.update(ids, labels, features=feats, task=task.t)

    def summary(self) -> dict[str, Any]:
        if self.memory is None:
            return {}
        # after task t (the runner records it after ``after_task``; after the last task: what that task rehearsed)
        return {"selection": self.memory.selection, "items": len(self.memory), **self.memory.summary()}

    def memory_summary(self) -> dict[str, Any] | None:
        return None if self.memory is None else {"selection": self.memory.selection, **self.memory.summary()}
