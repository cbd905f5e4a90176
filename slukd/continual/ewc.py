"""EWC, online (Kirkpatrick et al. 2017; Schwarz et al. 2018): the importance of a parameter is the diagonal of the
empirical Fisher information of the task's training loss,

    F_i = E_batches[(∂L_sup / ∂θ_i)²]

(the squared mini-batch gradient of the supervised loss, averaged over the task's training items), accumulated
online; the penalty is λ Σ_i F_i (θ_i − θ*_i)² (:mod:`slukd.continual.importance`). Row: ``ewc.yaml``.
"""

from __future__ import annotations

from typing import Any

import torch

from slukd.continual.importance import ImportancePenalty
from slukd.continual.plugin import TaskView

__all__ = ["EWC"]


class EWC(ImportancePenalty):
    """Online EWC; ``weight`` λ, ``decay`` γ (see :class:`ImportancePenalty`)."""

    name = "ewc"

    def batch_importance(self, model: torch.nn.Module, task: TaskView, batch: Any,
                         params: list[tuple[str, torch.nn.Parameter]]) -> list[torch.Tensor]:  # fmt: skip
        loss = task.data.loss(model, batch)
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() ** 2 for (_, p), g in zip(params, grads)]
