"""A KD method defined outside the package, as a user would: one class (the YAML line is in the test)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slukd.distill import KDContext, KDTerm, masked_mean


class CosineKD(KDTerm):
    """1 - cos(masked_mean(student frames) W, pooled teacher embedding), averaged over the KD rows; W a trainable
    head created by setup() (so the test also sees a user head optimised and checkpointed)."""

    name = "cos"
    needs = frozenset({"teacher_emb"})

    def setup(self, student_dim: int, teacher_dim: int, target_mean: torch.Tensor | None = None) -> None:
        self.head = torch.nn.Linear(student_dim, teacher_dim)

    def forward(self, ctx: KDContext) -> torch.Tensor:
        s = self.head(masked_mean(ctx.student_enc.float(), ctx.lens))
        return (1 - F.cosine_similarity(s, ctx.teacher_emb.float(), dim=-1)).mean()
