"""A continual-learning method defined outside the package, as a user would (docs/extending.md): one class; the
YAML line is in the test. L2-anchor: after each task keep the weights; later tasks pay λ Σ_i (θ_i − θ*_i)², i.e. EWC
with every importance 1 (the "L2" baseline of the EWC paper)."""

from __future__ import annotations

from typing import Any

import torch

from slukd.continual import ContinualPlugin, TaskView


class L2Anchor(ContinualPlugin):
    name = "l2"
    stateful = True  # the anchor is needed by the next task: saved after each task, restored on resume

    def __init__(self, weight: float = 0.01) -> None:
        self.weight = float(weight)
        self.anchor: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.anchor = {}

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor = state["anchor"]

    def after_task(self, task: TaskView) -> None:
        self.anchor = {n: p.detach().cpu().clone() for n, p in task.model.named_parameters() if p.requires_grad}

    def batch_loss(self, brain: Any, batch: Any, out: dict[str, Any]) -> torch.Tensor | None:
        if not self.anchor:
            return None
        params = dict(brain._model.named_parameters())
        return self.weight * sum(((params[n] - a.to(params[n].device)) ** 2).sum() for n, a in self.anchor.items())

    def summary(self) -> dict[str, Any]:
        return {"weight": self.weight, "anchored": len(self.anchor)}
