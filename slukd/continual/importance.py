"""Regularisation by parameter importance, shared by EWC and MAS: after each task, estimate an importance
``Ω_i >= 0`` of every trainable parameter ``θ_i`` on that task's training items, and keep the weights ``θ*`` of the
task; while later tasks train, every batch pays

    L_reg = λ · Σ_i Ω_i (θ_i − θ*_i)²          (λ = ``weight``; EWC's 1/2 is folded into λ)

Importance accumulates online over tasks, ``Ω ← γ · Ω_old + Ω_task`` (``decay`` γ), with the anchor ``θ*`` the
weights after the latest task (online EWC, Schwarz et al. 2018; MAS, Aljundi et al. 2018). A subclass defines
:meth:`batch_importance`, the per-parameter importance of one batch from the model and its gradient. The estimate is
the mean over batches of ``batch_size`` items (the usual mini-batch approximation); under DDP each process takes
every world-th batch and the estimates are averaged over the processes, so all of them hold the same state.
"""

from __future__ import annotations

from typing import Any

import torch

from slukd.continual.plugin import ContinualPlugin, TaskView
from slukd.utils.distributed import all_reduce_mean, rank_and_world

__all__ = ["ImportancePenalty"]


class ImportancePenalty(ContinualPlugin):
    """Base of EWC and MAS (see the module docstring).

    Args:
        weight: λ.
        decay: γ of the online accumulation (1: plain sum over tasks).
        batch_size: items per batch of the importance estimate.
        max_items: estimate on at most this many of the task's items (a seeded sample; None: all).
    """

    stateful = True

    def __init__(self, weight: float = 1.0, decay: float = 1.0, batch_size: int = 8, max_items: int | None = None):
        if weight < 0 or not 0.0 <= decay <= 1.0 or batch_size < 1 or (max_items is not None and max_items < 1):
            raise ValueError(
                f"{type(self).__name__}: need weight >= 0, decay in [0, 1], batch_size >= 1, max_items >= 1"
            )
        self.weight, self.decay, self.batch_size, self.max_items = float(weight), float(decay), batch_size, max_items
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self.importance, self.anchor = {}, {}

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])

    # ------------------------------------------------------------------ the penalty
    def batch_loss(self, brain: Any, batch: Any, out: dict[str, Any]) -> torch.Tensor | None:
        if not self.importance or self.weight == 0:
            return None
        total = None
        for name, p in brain._model.named_parameters():
            omega = self.importance.get(name)
            if omega is None or not p.requires_grad:
                continue
            omega, anchor = omega.to(p.device), self.anchor[name].to(p.device)
            term = (omega * (p.float() - anchor) ** 2).sum()
            total = term if total is None else total + term
        return None if total is None else self.weight * total

    # ------------------------------------------------------------------ the estimate after a task
    def batch_importance(self, model: torch.nn.Module, task: TaskView, batch: Any,
                         params: list[tuple[str, torch.nn.Parameter]]) -> list[torch.Tensor]:  # fmt: skip
        """Per-parameter importance of one batch (same shapes as ``params``)."""
        raise NotImplementedError

    def estimate(self, task: TaskView) -> dict[str, torch.Tensor]:
        """Ω of task ``task.t``: the mean of :meth:`batch_importance` over the task's training items."""
        model = task.model
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        ids, _ = task.candidates()
        if self.max_items is not None and len(ids) > self.max_items:
            pick = torch.randperm(len(ids), generator=torch.Generator().manual_seed(task.seed))[: self.max_items]
            ids = [ids[i] for i in sorted(pick.tolist())]
        rank, world = rank_and_world()
        sums = [torch.zeros_like(p, dtype=torch.float32) for _, p in params]
        n = torch.zeros((), dtype=torch.float64)
        was_training = model.training
        model.eval()  # no dropout: the estimate is a function of the weights and the data
        try:
            with torch.enable_grad():
                for k, batch in enumerate(task.data.batches(ids, self.batch_size)):
                    if k % world != rank:
                        continue
                    for acc, imp in zip(sums, self.batch_importance(model, task, batch, params)):
                        acc += imp.float()
                    n += 1
        finally:
            model.train(was_training)
        for acc in sums:
            all_reduce_mean(acc)
        all_reduce_mean(n)
        scale = 1.0 / max(float(n), 1e-12)
        return {name: (acc * scale).cpu() for (name, _), acc in zip(params, sums)}

    def after_task(self, task: TaskView) -> None:
        new = self.estimate(task)
        self.importance = {
            k: v + self.decay * self.importance[k] if k in self.importance else v for k, v in new.items()
        }
        self.anchor = {n: p.detach().float().cpu().clone() for n, p in task.model.named_parameters() if n in new}

    def summary(self) -> dict[str, Any]:
        if not self.importance:
            return {}
        total = sum(float(v.sum()) for v in self.importance.values())
        count = sum(v.numel() for v in self.importance.values())
        return {"weight": self.weight, "decay": self.decay, "mean_importance": total / max(count, 1)}
