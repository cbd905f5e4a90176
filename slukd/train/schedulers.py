"""Learning-rate schedules as functions of the optimiser step, declared in YAML and applied by :class:`KDBrain`.

A schedule maps the number of optimiser steps already taken, ``s``, to a factor ``f(s)``; before step ``s`` every
parameter group's learning rate is set to ``base_lr(group) · f(s)`` (``base_lr`` is the group's ``initial_lr``,
so a pretrained encoder's own learning rate is scaled like the rest). The step count is the Brain's
``optimizer_step``, which SpeechBrain checkpoints, so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

__all__ = ["Schedule", "WarmupConstant", "WarmupCosine", "apply_schedule"]


class Schedule:
    """Base: ``factor(step)``; ``total_steps`` is set by the Brain when the schedule needs it."""

    total_steps: int | None = None

    def factor(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class WarmupConstant(Schedule):
    """f(s) = min(1, (s + 1) / warmup_steps): linear warm-up, then constant."""

    def __init__(self, warmup_steps: int = 0) -> None:
        self.warmup_steps = max(1, int(warmup_steps))

    def factor(self, step: int) -> float:
        return min(1.0, (step + 1) / self.warmup_steps)


class WarmupCosine(Schedule):
    """f(s) = (s + 1) / W for s < W, then r + (1 - r) · ½ (1 + cos(π p)), p = min(1, (s - W) / (S - W)), with
    W = warmup_steps, S = total_steps (set by the Brain: epochs × batches per epoch) and r = final_ratio."""

    def __init__(self, warmup_steps: int = 100, final_ratio: float = 0.05) -> None:
        self.warmup_steps = max(1, int(warmup_steps))
        self.final_ratio = float(final_ratio)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        total = self.total_steps or step + 1
        p = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def apply_schedule(schedule: Schedule, optimizer: Optimizer, step: int) -> float:
    """Set every group's lr to ``initial_lr · schedule.factor(step)``; returns the first group's lr."""
    f = schedule.factor(step)
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"] * f
    return optimizer.param_groups[0]["lr"]
