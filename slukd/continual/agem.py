"""A-GEM, Averaged Gradient Episodic Memory (Chaudhry et al. 2019): the memory is not replayed; it constrains each
optimiser step. With g the gradient of the current batch and g_ref the gradient of the supervised loss on a batch
drawn from the memory,

    g ← g − (g·g_ref / g_ref·g_ref) · g_ref      when g·g_ref < 0 (else g is kept),

so the step never increases the memory's loss to first order. The memory is a :class:`Rehearsal` memory (random or
herding, per-class budget) kept out of the training set; the reference batch of optimiser step k is drawn with seed
(task seed, k), so a resumed run draws the same batches; under DDP g_ref is averaged over the processes (g already
is), so every process projects alike. Row: ``agem.yaml``.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from slukd.continual.plugin import TaskView
from slukd.continual.rehearsal import Rehearsal
from slukd.utils.distributed import all_reduce_mean

__all__ = ["AGEM", "project_gradient"]


def project_gradient(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A-GEM's projection of the flat gradient ``g`` [P] against ``g_ref`` [P]: (new g, whether it was projected)."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - (dot / torch.dot(g_ref, g_ref).clamp(min=1e-20)) * g_ref, True


class AGEM(Rehearsal):
    """A-GEM (see the module docstring). ``selection`` / ``per_class`` / ``fraction``: the memory, as for
    :class:`Rehearsal`; ``batch_size``: items of the reference batch."""

    name = "agem"

    def __init__(self, selection: str = "random", per_class: int | None = None, fraction: float | None = None,
                 batch_size: int = 8, rule: str = "fixed_quota") -> None:  # fmt: skip
        super().__init__(selection=selection, per_class=per_class, fraction=fraction, in_training=False, rule=rule)
        if batch_size < 1:
            raise ValueError(f"AGEM batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._task: TaskView | None = None
        self.projected = 0

    def before_task(self, task: TaskView) -> None:
        self._task, self.projected = task, 0

    def before_step(self, brain: Any) -> None:
        task = self._task
        if task is None or self.memory is None or len(self.memory) == 0:
            return
        ids = self.memory.ids()
        rng = random.Random(f"{task.seed}:{brain.optimizer_step}")
        pick = sorted(rng.sample(range(len(ids)), min(self.batch_size, len(ids))))
        batch = next(iter(task.data.batches([ids[i] for i in pick], len(pick))))
        model = brain._model
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        if not params:
            return
        loss = task.data.loss(model, batch)
        ref = torch.autograd.grad(loss, params, allow_unused=True)
        g_ref = torch.cat([(torch.zeros_like(p) if r is None else r).reshape(-1).float() for p, r in zip(params, ref)])
        all_reduce_mean(g_ref)
        g = torch.cat([p.grad.reshape(-1).float() for p in params])
        new, projected = project_gradient(g, g_ref)
        if projected:
            self.projected += 1
            offset = 0
            for p in params:
                n = p.numel()
                p.grad.copy_(new[offset : offset + n].view_as(p.grad))
                offset += n
