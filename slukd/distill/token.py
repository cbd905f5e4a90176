"""Token-level knowledge distillation: temperature-scaled KL over the vocabulary, pad-masked.

Both models are fed the same prefix (teacher forcing on the gold target), so position l of the student and of the
teacher predict the same next token. Shapes: B = batch, L = target positions, V = vocabulary.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["TokenKL"]


class TokenKL(nn.Module):
    """Temperature-scaled KL(teacher ‖ student) per target position (the SLU paper's tok-KD).

    p_t = softmax(z_t / T), p_s = softmax(z_s / T) over V;  KL_bl = Σ_v p_t (log p_t - log p_s).
    loss = T² · Σ_{b,l} m_bl KL_bl / Σ_{b,l} m_bl
    with m = mask [B, L] (True = real token; pad positions never count): the mean over the real target positions.
    0 when there is none.
    The T² factor keeps gradient magnitudes comparable across temperatures (Hinton et al.). Computed in float32;
    teacher logits are detached.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student_logits [B, L, V], teacher_logits [B, L, V], mask [B, L] bool -> scalar."""
        if student_logits.dim() != 3 or teacher_logits.dim() != 3:
            raise ValueError(
                f"TokenKL expects logits [B, L, V], got student {tuple(student_logits.shape)} "
                f"and teacher {tuple(teacher_logits.shape)}"
            )
        if student_logits.shape[-1] != teacher_logits.shape[-1]:
            raise ValueError(
                f"TokenKL needs one shared vocabulary: student V={student_logits.shape[-1]} but teacher "
                f"V={teacher_logits.shape[-1]} (token-level KD is undefined across vocabularies; use seq-KD)"
            )
        if student_logits.shape[:2] != teacher_logits.shape[:2]:
            raise ValueError(
                f"student and teacher logits must cover the same [B, L] (same prefix): "
                f"{tuple(student_logits.shape[:2])} vs {tuple(teacher_logits.shape[:2])}"
            )
        batch, length, _ = student_logits.shape
        if mask is None:
            m = torch.ones(batch, length, dtype=torch.float32, device=student_logits.device)
        else:
            if tuple(mask.shape) != (batch, length):
                raise ValueError(f"mask must have shape [B, L]=[{batch}, {length}], got {tuple(mask.shape)}")
            m = mask.to(device=student_logits.device).bool().float()
        tau = self.temperature
        log_ps = F.log_softmax(student_logits.float() / tau, dim=-1)
        log_pt = F.log_softmax(teacher_logits.detach().float() / tau, dim=-1)
        kl = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(dim=-1)  # [B, L]
        kl = torch.where(m > 0, kl, torch.zeros((), device=kl.device))  # pad positions never reach the sum
        denom = m.sum()
        if float(denom) == 0.0:
            return kl.sum() * 0.0
        return (tau**2) * (kl * m).sum() / denom
