"""Continual-learning methods as plugins (Avalanche's strategy/plugin split, for any seq2seq task).

A method is one :class:`ContinualPlugin` subclass, declared in a row YAML::

    extra_continual_methods: [!new:slukd.continual.ewc.EWC {weight: 1000.0}]

The :class:`slukd.continual.ContinualRunner` and the training Brain (:class:`slukd.train.KDBrain`) call its hooks:

==========================  ==========================================================================================
``check()``                 before any work: raise ValueError on settings that cannot work
``setup(run)``              once per run: ``n_train`` (training items of all tasks), ``n_classes``, ``seed``, ``out``
``reset()``                 before task 1 (fresh state)
``restore(folder, t)``      before task t > 1: the state saved after task t-1 (also after a kill and rerun)
``before_task(task)``       task t starts: model initialised from task t-1, ``task.teacher`` its frozen copy (or None)
``train_items(task)``       item IDs added to task t's training set (rehearsal: the memory), flagged ``is_memory``
``batch_loss(brain, b, o)`` a term added to the loss of every training batch (EWC/MAS penalty, DER++ logit MSE), or
                            None; logged per epoch as ``cl_<name>``
``before_step(brain)``      between backward and the optimiser step (gradients unscaled, before clipping: A-GEM)
``after_task(task)``        task t trained and tested: ``task.model`` holds its selected weights (memory update,
                            Fisher, stored logits, ...)
``save(folder, t)``         the state after task t, written into the run folder (atomic)
``summary()``               a dict recorded in ``results/step<t>.json`` under ``continual.<name>``
``memory_summary()``        the episodic memory it keeps (``keeps_memory = True``), recorded under ``memory``
==========================  ==========================================================================================

``task`` is a :class:`TaskView`: the task index and model, plus what the recipe's strategy offers every method
(the task's training items with their class labels, batches of any items, the student's forward pass and supervised
loss, pooled features). A plugin never reads recipe internals, so one file works for every task that has these.

Task 1 is shared by the rows of a seed (:mod:`slukd.continual.first_task`): a plugin whose settings can change task 1
sets ``changes_first_task = True`` (none of the built-in ones does: they act from task 2 on). Under DDP every hook runs
in every process; state that is estimated from data is averaged over the processes (:func:`slukd.utils.distributed.
all_reduce_mean`) so that every process holds the same state, and only the main process writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from slukd.utils.io import atomic_torch_save

__all__ = ["ContinualPlugin", "TaskView", "TaskData", "check_plugins"]


class TaskData(Protocol):
    """What a recipe's strategy offers the plugins (0-based task index ``t``)."""

    device: str

    def memory_candidates(self, t: int) -> tuple[list[str], list[str]]:
        """(item IDs, class labels) of task t's training items."""

    def features(self, t: int, model: torch.nn.Module, ids: list[str]) -> torch.Tensor:
        """[N, D] pooled encoder features of ``ids`` (herding)."""

    def batches(self, ids: Sequence[str], batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Any]:
        """Padded batches of the training items ``ids`` (on the CPU; ``batch.to(device)`` moves them)."""

    def forward(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """The student's teacher-forced pass: {enc [B, T, D], logits [B, L, V], lens [B], gold_mask [B, L]}."""

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The supervised training loss of a batch (scalar, differentiable)."""


@dataclass
class TaskView:
    """One task as the plugins see it. ``model`` is the student (before_task: initialised from task t-1; after_task:
    the selected weights of task t); ``teacher`` the frozen model of task t-1 (None when no method asked for it)."""

    t: int
    model: torch.nn.Module
    data: TaskData
    seed: int = 0
    teacher: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.data.device

    def candidates(self) -> tuple[list[str], list[str]]:
        """(IDs, class labels) of this task's training items."""
        return self.data.memory_candidates(self.t)


class ContinualPlugin:
    """Base of a continual-learning method (see the module docstring); every hook is a no-op here.

    ``name`` keys the plugin's files, logs and summary (unique per run); ``needs_teacher``: the frozen model of task
    t-1 must exist during task t; ``changes_first_task``: the plugin's settings can change task 1 (then the rows using
    it do not share task 1 with the others); ``keeps_memory``: the plugin keeps an episodic memory
    (:meth:`memory_summary`; at most one plugin of a run); ``stateful``: :meth:`state_dict` holds state that task
    t+1 needs (saved after every task, and a missing file is an error on resume).
    """

    name: str = "plugin"
    keeps_memory: bool = False
    needs_teacher: bool = False
    changes_first_task: bool = False
    stateful: bool = False

    # ------------------------------------------------------------------ state
    def check(self) -> None:
        """Raise ``ValueError`` naming the setting when the plugin's settings cannot work; called before any work
        (before the data is prepared), so a bad setting never costs a corpus preparation."""

    def setup(self, run: dict[str, Any]) -> None:
        """Once per run, before any task: ``run`` has ``n_train`` (training items of all tasks), ``n_classes``
        (classes of the corpus), ``seed`` and ``out`` (the run folder)."""

    def reset(self) -> None:
        """Fresh state, before task 1."""

    def state_dict(self) -> dict[str, Any]:
        """The state to keep between tasks (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result."""

    def state_path(self, folder: str | os.PathLike, t: int) -> Path:
        """Where the state after task t (0-based) lives: ``<run>/continual/<name>_after_task<t+1>.pt``."""
        return Path(folder) / "continual" / f"{self.name}_after_task{t + 1}.pt"

    def save(self, folder: str | os.PathLike, t: int) -> None:
        """Write the state after task t (main process only; atomic)."""
        if self.stateful:
            atomic_torch_save(self.state_dict(), self.state_path(folder, t))

    def restore(self, folder: str | os.PathLike, t: int) -> None:
        """Load the state after task t (0-based; called before task t+1)."""
        if not self.stateful:
            return
        path = self.state_path(folder, t)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: state of continual method {self.name!r} after task {t + 1} missing")
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))

    # ------------------------------------------------------------------ task hooks
    def before_task(self, task: TaskView) -> None:
        """Task ``task.t`` starts (model initialised from task t-1)."""

    def train_items(self, task: TaskView) -> list[str]:
        """Item IDs added to the task's training set (flagged as memory items)."""
        return []

    def batch_loss(self, brain: Any, batch: Any, out: dict[str, Any]) -> torch.Tensor | None:
        """A term added to the training loss of a batch (``out``: the student's forward pass), or None."""
        return None

    def before_step(self, brain: Any) -> None:
        """Between backward and the optimiser step (gradients are unscaled; clipping comes after)."""

    def after_task(self, task: TaskView) -> None:
        """Task ``task.t`` is trained and tested; ``task.model`` holds its selected weights."""

    def summary(self) -> dict[str, Any]:
        """Recorded in the step results under ``continual.<name>``."""
        return {}

    def memory_summary(self) -> dict[str, Any] | None:
        """The episodic memory the plugin keeps now, as :meth:`slukd.continual.memory.RehearsalMemory.summary`
        gives it (``rule``, ``quota_per_class``, ``capacity``, ``total``, ``per_class``); None when it keeps none.
        The runner records it under ``memory`` in the step results, so a report reads the memory from a declaration,
        whichever plugin keeps it and however that plugin uses it (replayed, projected against, ...)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_plugins(plugins: Sequence[Any]) -> list[ContinualPlugin]:
    """Validate ``continual_methods`` (+ ``extra_continual_methods``): plugin instances with unique names, at most
    one keeping a memory."""
    names: set[str] = set()
    for p in plugins:
        if not isinstance(p, ContinualPlugin):
            raise TypeError(
                f"continual methods must be slukd.continual.ContinualPlugin instances, got {type(p).__name__}"
            )
        if p.name in names:
            raise ValueError(f"two continual methods are named {p.name!r}; names must be unique")
        names.add(p.name)
    keepers = [p.name for p in plugins if p.keeps_memory]
    if len(keepers) > 1:
        raise ValueError(f"continual methods {', '.join(keepers)} each keep a memory; a run keeps at most one")
    return list(plugins)
