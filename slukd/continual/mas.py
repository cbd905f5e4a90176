"""MAS, Memory Aware Synapses (Aljundi et al. 2018): the importance of a parameter is the sensitivity of the model's
output to it, without labels,

    Ω_i = E_batches[ |∂ ‖F(x)‖²₂ / ∂θ_i| ],   ‖F(x)‖²₂ = mean over the batch's real target positions of the squared
                                                       L2 norm of the decoder's output logits,

accumulated over tasks; the penalty is λ Σ_i Ω_i (θ_i − θ*_i)² (:mod:`slukd.continual.importance`). Row: ``mas.yaml``.
"""

from __future__ import annotations

from typing import Any

import torch

from slukd.continual.importance import ImportancePenalty
from slukd.continual.plugin import TaskView

__all__ = ["MAS"]


class MAS(ImportancePenalty):
    """MAS; ``weight`` λ, ``decay`` γ (see :class:`ImportancePenalty`)."""

    name = "mas"

    def batch_importance(self, model: torch.nn.Module, task: TaskView, batch: Any,
                         params: list[tuple[str, torch.nn.Parameter]]) -> list[torch.Tensor]:  # fmt: skip
        out = task.data.forward(model, batch)
        logits, mask = out["logits"].float(), out["gold_mask"]
        norm = (logits.pow(2).sum(-1) * mask).sum() / mask.sum().clamp(min=1)
        grads = torch.autograd.grad(norm, [p for _, p in params], allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach().abs() for (_, p), g in zip(params, grads)]
