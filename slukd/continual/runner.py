"""The continual-learning runner: a resumable state machine over the tasks of one run folder.

It knows tasks, folders, markers, the rehearsal memory hand-off and when to call the recipe's report, and nothing
of the learning problem: the recipe gives it a :class:`Strategy` (Avalanche's split: the runner is the loop, the
strategy trains and evaluates) and its report function. Run folder::

    task<k>/                    the strategy's files of task k (checkpoints, teacher targets, predictions, ...)
    task<k>/DONE                written last; a task with it is skipped on rerun
    memory_after_task<k>.json   rehearsal memory after task k
    results/step<k>.json        scores after task k (the strategy's dict + timings); report.{csv,md}, matrices

Per task t: the continual plugins (:mod:`slukd.continual.plugin`; rehearsal is one) get their state after task
t-1 -> ``strategy.train(t, plugins)`` (resumable; the plugins' training hooks run inside it) ->
``strategy.evaluate(t, model)`` -> the plugins' ``after_task`` (memory update, Fisher, ...; not after the last task)
-> ``results/step<t>.json`` written atomically (with each plugin's summary under ``continual``) -> the plugins' states
saved -> DONE. Every step is idempotent, so killing the job anywhere and rerunning the same command finishes with the
same results. ``only_task`` (``--task N``) runs one task and needs task N-1 finished. Under DDP every process trains,
evaluates and runs the plugin hooks (the strategy shards decoding, a plugin averages what it estimates); the files
belong to the main process (the others wait at a barrier).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from speechbrain.utils.distributed import if_main_process

from slukd.continual.plugin import ContinualPlugin, TaskView, check_plugins
from slukd.utils.distributed import barrier, ddp_active
from slukd.utils.faults import fault_scope, maybe_die
from slukd.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["TaskOrderError", "Strategy", "ContinualRunner", "barrier", "peak_rss_mb"]  # barrier: re-exported


class TaskOrderError(RuntimeError):
    """``--task N`` asked for a task whose predecessor has not finished."""


class Strategy(Protocol):
    """What a recipe gives the runner (every method gets the 0-based task index)."""

    device: str

    def train(self, t: int, plugins: list[ContinualPlugin]) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train task t (resuming if interrupted) from task t-1's model, calling the plugins' task and batch hooks;
        returns (model with the selected weights, info merged into the step result, e.g. the chosen checkpoint)."""

    def evaluate(self, t: int, model: torch.nn.Module) -> dict[str, Any] | None:
        """Every process: test after task t; the main process returns the step result (``per_task`` and ``seen``
        metric dicts), the others None."""

    def memory_candidates(self, t: int) -> tuple[list[str], list[str]]:
        """(item IDs, class labels) of task t's training items."""

    def features(self, t: int, model: torch.nn.Module, ids: list[str]) -> torch.Tensor:
        """[N, D] features of ``ids`` for herding."""

    def load_trained(self, t: int) -> torch.nn.Module:
        """The model of a finished task t (its selected weights, from the task folder)."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and its finished children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


class ContinualRunner:
    """Runs the tasks of ``out_dir`` (see the module docstring).

    Args:
        out_dir: the run folder.
        n_tasks: number of tasks.
        plugins: the continual methods (:class:`slukd.continual.ContinualPlugin`), already ``setup()``.
        header: fields copied into every step result (e.g. row and seed).
        first_task_cache / first_task_key: share task 1 with other runs (:mod:`slukd.continual.first_task`);
            off when None or under DDP.
        report: the recipe's report function, called with the run folder once every task is done.
        seed: the run's seed (plugins draw from ``seed * 1000 + t``).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        n_tasks: int,
        plugins: list[ContinualPlugin] = (),
        header: dict[str, Any] | None = None,
        first_task_cache: Any = None,
        first_task_key: str | None = None,
        report: Callable[[Path], dict[str, Any]] | None = None,
        seed: int = 0,
    ) -> None:
        self.out = Path(out_dir)
        self.report = report
        self.n_tasks = int(n_tasks)
        self.plugins = check_plugins(list(plugins))
        self.header = dict(header or {})
        self.seed = int(seed)
        self.cache = first_task_cache if first_task_key and not ddp_active() else None
        self.first_task_key = first_task_key

    def _memory_record(self) -> dict[str, Any] | None:
        """The memory after this task as the plugins declare it (:meth:`ContinualPlugin.memory_summary`), with
        ``"plugin"``: the name of the plugin that keeps it; None when none keeps one (:func:`check_plugins` allows
        at most one)."""
        kept = [{**m, "plugin": p.name} for p in self.plugins if p.keeps_memory and (m := p.memory_summary())]
        return kept[0] if kept else None

    def task_dir(self, t: int) -> Path:
        return self.out / f"task{t + 1}"

    def done(self, t: int) -> bool:
        return (self.task_dir(t) / "DONE").is_file()

    def restore_plugins(self, t: int) -> None:
        """Put every plugin in its state after task t-1 (fresh before task 1)."""
        for p in self.plugins:
            if t == 0:
                p.reset()
            else:
                p.restore(self.out, t - 1)

    def tasks_to_run(self, only_task: int | None) -> list[int]:
        """0-based tasks to run for ``only_task`` (1-based, None = all); checks the order."""
        if only_task is None:
            return list(range(self.n_tasks))
        if not 1 <= only_task <= self.n_tasks:
            raise TaskOrderError(f"--task {only_task}: the scenario has tasks 1..{self.n_tasks}")
        t = only_task - 1
        if t > 0 and not self.done(t - 1):
            raise TaskOrderError(
                f"--task {only_task} needs task {t} finished first ({self.task_dir(t - 1) / 'DONE'} is missing)"
            )
        return [t]

    def run(self, strategy: Strategy, only_task: int | None = None) -> dict[str, Any] | None:
        """Run every unfinished task (or only ``only_task``), then write the report when all are done. Returns the
        report summary (main process, all tasks done) or None."""
        for t in self.tasks_to_run(only_task):
            if self.done(t):
                logger.info("task %d/%d already done (%s)", t + 1, self.n_tasks, self.task_dir(t) / "DONE")
                continue
            self.run_task(strategy, t)
        summary = None
        if all(self.done(t) for t in range(self.n_tasks)) and if_main_process():
            summary = write_report(self.report, self.out) if self.report is not None else None
            logger.info("run finished: all %d tasks done in %s", self.n_tasks, self.out)
        barrier()
        return summary

    def run_task(self, strategy: Strategy, t: int) -> None:
        """Train, evaluate, update the memory and mark task t done (task 1 through the shared cache when set)."""
        if t == 0 and self.cache is not None:
            with self.cache.claim(self.first_task_key) as entry:
                if entry is None:
                    self._run_task(strategy, t, publish=True)
                    return
                meta = self.cache.restore(entry, self.task_dir(0))
            logger.info("task 1 taken from the shared first-task cache %s (trained by %s)", entry, meta["source_run"])
            self.restore_plugins(0)
            reused = {"reused": True, "cache_key": self.first_task_key, "trained_by": meta["source_run"],
                      "train_s": meta["train_s"], "eval_s": meta["eval_s"]}  # fmt: skip
            info = {**meta["info"], "first_task": reused}
            self._finish(strategy, 0, strategy.load_trained(0), info, 0.0, scores=meta["scores"])
            return
        self._run_task(strategy, t)

    def _run_task(self, strategy: Strategy, t: int, publish: bool = False) -> None:
        t0 = time.perf_counter()
        self.task_dir(t).mkdir(parents=True, exist_ok=True)
        self.restore_plugins(t)
        model, info = strategy.train(t, self.plugins)
        train_s = time.perf_counter() - t0
        self._finish(strategy, t, model, info, train_s, publish=publish)
        barrier()

    def _finish(self, strategy, t, model, info, train_s, scores=None, publish=False) -> None:
        """Every process: evaluate (the strategy spreads decoding over them) and run the plugins' ``after_task``;
        main process: step result, first-task cache, plugin states, DONE."""
        t0 = time.perf_counter()
        if scores is None:
            scores = strategy.evaluate(t, model)
        eval_s = time.perf_counter() - t0
        maybe_die("memory", t + 1)
        if t < self.n_tasks - 1:  # the state after the last task would serve no later task
            view = TaskView(t=t, model=model, data=strategy, seed=self.seed * 1000 + t)
            for p in self.plugins:
                p.after_task(view)
        if not if_main_process():
            return
        if publish:
            files = {f.name: f for f in self.task_dir(t).iterdir() if f.is_file() and f.name != "DONE"}
            meta = {"scores": scores, "info": info, "train_s": train_s, "eval_s": eval_s, "source_run": str(self.out)}
            self.cache.publish(self.first_task_key, files, meta)
            info = {**info, "first_task": {"reused": False, "cache_key": self.first_task_key}}
        result = {
            "step": t + 1,
            "n_steps": self.n_tasks,
            **self.header,
            **scores,
            **info,
            "continual": {p.name: summary for p in self.plugins if (summary := p.summary())},
            "memory": self._memory_record(),
            "train_s": train_s,
            "eval_s": eval_s,
            "wall_s": train_s + eval_s,
            "peak_rss_mb": peak_rss_mb(),
        }
        atomic_write_json(self.out / "results" / f"step{t + 1}.json", result)
        if t < self.n_tasks - 1:
            for p in self.plugins:
                p.save(self.out, t)
        atomic_write_text(self.task_dir(t) / "DONE", f"task {t + 1} finished\n")


def write_report(report: Callable[[Path], dict[str, Any]], out: Path) -> dict[str, Any]:
    """``report(out)``, the recipe's run report, inside the ``report`` fault scope (``SLUKD_DIE_AT=report::N``: the
    N-th atomic write of the report dies)."""
    with fault_scope("report"):
        return report(out)
