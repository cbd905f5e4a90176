"""Encoder-level ("audio") knowledge distillation: masked pooling, projection heads, MSE and symmetric InfoNCE.

Shapes: B = batch, T = frames, D = feature dimension. Relative lengths follow SpeechBrain: ``rel_lengths[b]`` in
(0, 1] is the fraction of the padded time axis that item ``b`` really occupies, so its valid frames are the first
``max(1, round(rel_lengths[b] * T))``. Padding never changes any result of this module.

Teacher features are detached before use: gradients reach the student and the projection heads only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["masked_mean", "frame_mask", "EncoderMSE", "EncoderContrastive"]

_REL_TOL = 1e-4


def frame_mask(rel_lengths: torch.Tensor | None, batch: int, frames: int, device=None) -> torch.Tensor:
    """Boolean mask [B, T] of the valid frames: frame t of item b is valid iff t < max(1, round(rel_len[b] * T)).

    ``rel_lengths=None`` means every frame is valid.
    """
    if rel_lengths is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    rel = torch.as_tensor(rel_lengths, device=device)
    if rel.dim() != 1 or rel.shape[0] != batch:
        raise ValueError(f"rel_lengths must have shape [B]=[{batch}], got {tuple(rel.shape)}")
    if not torch.is_floating_point(rel):
        raise TypeError(f"rel_lengths must be relative (float in (0, 1]), got dtype {rel.dtype}")
    if rel.numel() and (bool((rel <= 0).any()) or bool((rel > 1 + _REL_TOL).any())):
        raise ValueError(
            f"rel_lengths must lie in (0, 1] (SpeechBrain relative lengths), got min {rel.min().item():.4g} "
            f"max {rel.max().item():.4g}"
        )
    n_valid = torch.round(rel.float() * frames).long().clamp(min=1, max=frames)  # [B]
    return torch.arange(frames, device=rel.device).unsqueeze(0) < n_valid.unsqueeze(1)


def masked_mean(x: torch.Tensor, rel_lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over the valid frames only.

    x [B, T, D], rel_lengths [B] (relative, in (0, 1]) -> [B, D];
    out[b] = (1 / n_b) Σ_{t < n_b} x[b, t] with n_b = max(1, round(rel_lengths[b] * T)).
    """
    if x.dim() != 3:
        raise ValueError(f"masked_mean expects x of shape [B, T, D], got {tuple(x.shape)}")
    batch, frames, _ = x.shape
    if frames == 0:
        raise ValueError("masked_mean got an empty time axis (T = 0)")
    mask = frame_mask(rel_lengths, batch, frames, device=x.device).unsqueeze(-1)  # [B, T, 1]
    # where (not multiply) so that even NaN/inf in the padding cannot leak into the mean.
    summed = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    return summed / mask.sum(dim=1).to(x.dtype)


class _Projected(nn.Module):
    """Shared set-up: optional trainable linear projections of student and teacher features to a common space."""

    def __init__(self, student_dim: int, teacher_dim: int, proj_dim: int | None, project_teacher: bool):
        super().__init__()
        if student_dim <= 0 or teacher_dim <= 0:
            raise ValueError(f"dimensions must be positive, got student_dim={student_dim} teacher_dim={teacher_dim}")
        self.student_dim, self.teacher_dim = int(student_dim), int(teacher_dim)
        if proj_dim is None and student_dim == teacher_dim:
            self.student_proj: nn.Module = nn.Identity()
            self.teacher_proj: nn.Module = nn.Identity()
            self.proj_dim = self.student_dim
        else:
            out = int(proj_dim) if proj_dim is not None else self.teacher_dim
            if not project_teacher and out != self.teacher_dim:
                raise ValueError(
                    f"project_teacher=False needs proj_dim == teacher_dim ({self.teacher_dim}), got {proj_dim}"
                )
            self.student_proj = nn.Linear(self.student_dim, out)
            self.teacher_proj = nn.Linear(self.teacher_dim, out) if project_teacher else nn.Identity()
            self.proj_dim = out

    def _check(self, s: torch.Tensor, t: torch.Tensor) -> None:
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"student and teacher batch sizes differ: {s.shape[0]} vs {t.shape[0]}")
        if s.shape[-1] != self.student_dim:
            raise ValueError(f"student features have dim {s.shape[-1]}, expected student_dim={self.student_dim}")
        if t.shape[-1] != self.teacher_dim:
            raise ValueError(f"teacher features have dim {t.shape[-1]}, expected teacher_dim={self.teacher_dim}")
        if s.dim() not in (2, 3) or t.dim() not in (2, 3):
            raise ValueError(f"features must be [B, T, D] (or pooled [B, D]), got {tuple(s.shape)}, {tuple(t.shape)}")

    def _pool_project(self, s, t, s_lens, t_lens) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ([B, T, D] -> [B, D]; [B, D] input is taken as already pooled) and project both sides."""
        t = t.detach()
        s_vec = masked_mean(s, s_lens) if s.dim() == 3 else s
        t_vec = masked_mean(t, t_lens) if t.dim() == 3 else t
        return self.student_proj(s_vec), self.teacher_proj(t_vec.to(s_vec.dtype))


class EncoderMSE(_Projected):
    """MSE between student and teacher encoder outputs (the SLU paper's audio-KD, the captioning paper's MSE KD).

    pool=True:  s = P(masked_mean(S, s_lens)) [B, Dt], t = masked_mean(T, t_lens) [B, Dt] (fixed, detached);
                l_b = (1/Dt) Σ_d (s_bd - t_bd)².
    pool=False: frame-wise, needs equal time axes: l_b = (1/(n_b Dt)) Σ_{t<n_b} Σ_d (s_btd - t_btd)², n_b from s_lens.
    Loss = (1/B) Σ_b l_b (the plain mean over batch and dimension).

    The teacher side is a fixed target: only the student is mapped, into the teacher's space. P is the identity when
    the dimensions are equal (and ``proj_dim`` is None), else a trainable ``nn.Linear(Ds, Dt)`` that starts at the
    uninformed prediction: weights 0 and bias = ``target_mean`` (the teacher embeddings' mean when known, else 0).
    So a student whose features carry no information about the clip cannot lower the loss below the variance of
    the teacher embeddings; projecting both sides instead (as the captioning paper's code does) lets the two heads
    shrink toward a constant and the loss reach zero without the student learning anything.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        proj_dim: int | None = None,
        pool: bool = True,
        target_mean: torch.Tensor | None = None,
    ):
        if proj_dim is not None and int(proj_dim) != int(teacher_dim):
            raise ValueError(
                f"EncoderMSE maps the student into the teacher's space: proj_dim must be None or teacher_dim "
                f"({teacher_dim}), got {proj_dim}"
            )
        super().__init__(student_dim, teacher_dim, proj_dim, project_teacher=False)
        self.pool = bool(pool)
        self.reset_head(target_mean)

    def reset_head(self, target_mean: torch.Tensor | None = None) -> None:
        """Set the student projection (when there is one) to the uninformed prediction: W = 0, b = target_mean."""
        if not isinstance(self.student_proj, nn.Linear):
            return
        with torch.no_grad():
            self.student_proj.weight.zero_()
            if target_mean is None:
                self.student_proj.bias.zero_()
            else:
                mean = torch.as_tensor(target_mean, dtype=self.student_proj.bias.dtype).reshape(-1)
                if mean.numel() != self.teacher_dim:
                    raise ValueError(f"target_mean has {mean.numel()} values, teacher_dim is {self.teacher_dim}")
                self.student_proj.bias.copy_(mean.to(self.student_proj.bias.device))

    def forward(
        self,
        student_feats: torch.Tensor,
        teacher_feats: torch.Tensor,
        student_lens: torch.Tensor | None = None,
        teacher_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student_feats [B, Ts, Ds], teacher_feats [B, Tt, Dt], lens [B] relative -> scalar."""
        self._check(student_feats, teacher_feats)
        if self.pool:
            s, t = self._pool_project(student_feats, teacher_feats, student_lens, teacher_lens)
            per_item = ((s - t) ** 2).mean(dim=-1)  # [B]
            return per_item.mean()
        if student_feats.dim() != 3 or teacher_feats.dim() != 3 or student_feats.shape[1] != teacher_feats.shape[1]:
            raise ValueError(
                "EncoderMSE(pool=False) compares frames and needs equal time axes, got student "
                f"{tuple(student_feats.shape)} and teacher {tuple(teacher_feats.shape)}; use pool=True"
            )
        s = self.student_proj(student_feats)
        t = self.teacher_proj(teacher_feats.detach().to(s.dtype))
        mask = frame_mask(student_lens, s.shape[0], s.shape[1], device=s.device)  # [B, T]
        sq = ((s - t) ** 2).mean(dim=-1)  # [B, T]
        sq = torch.where(mask, sq, torch.zeros((), dtype=sq.dtype, device=sq.device))
        per_item = sq.sum(dim=1) / mask.sum(dim=1).to(sq.dtype)
        return per_item.mean()


class EncoderContrastive(_Projected):
    """Symmetric InfoNCE between pooled student and teacher embeddings (the captioning paper's contrastive KD).

    s_b = normalize(P_s(masked_mean(S, s_lens))_b), t_b = normalize(P_t(masked_mean(T, t_lens))_b), both [B, P];
    logits = s tᵀ / τ  [B, B], τ = exp(log τ) clamped to [min_temperature, max_temperature] (log τ learned when
    ``learn_temperature``); items i ≠ j with ids[i] == ids[j] are removed from each other's negatives (logit -inf).
    l_b = ½ [CE(logits[b, :], b) + CE(logitsᵀ[b, :], b)]; loss = (1/B) Σ_b l_b. A batch of fewer than two items
    gives 0.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        proj_dim: int | None = None,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        project_teacher: bool = True,
    ):
        super().__init__(student_dim, teacher_dim, proj_dim, project_teacher)
        if not (0 < min_temperature <= temperature <= max_temperature):
            raise ValueError(
                f"need 0 < min_temperature <= temperature <= max_temperature, got "
                f"{min_temperature}, {temperature}, {max_temperature}"
            )
        self.min_log_t, self.max_log_t = math.log(min_temperature), math.log(max_temperature)
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> float:
        """The current (clamped) temperature τ."""
        return float(self.log_temperature.detach().clamp(self.min_log_t, self.max_log_t).exp())

    def logits(
        self,
        student_feats: torch.Tensor,
        teacher_feats: torch.Tensor,
        student_lens: torch.Tensor | None = None,
        teacher_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The [B, B] similarity logits s tᵀ / τ (row = student item, column = teacher item)."""
        self._check(student_feats, teacher_feats)
        s, t = self._pool_project(student_feats, teacher_feats, student_lens, teacher_lens)
        s, t = F.normalize(s.float(), dim=-1), F.normalize(t.float(), dim=-1)
        tau = self.log_temperature.clamp(self.min_log_t, self.max_log_t).exp()
        return s @ t.T / tau

    def forward(
        self,
        student_feats: torch.Tensor,
        teacher_feats: torch.Tensor,
        student_lens: torch.Tensor | None = None,
        teacher_lens: torch.Tensor | None = None,
        ids: Sequence | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student_feats [B, Ts, Ds], teacher_feats [B, Tt, Dt], lens [B], ids [B] (str/int) -> scalar."""
        batch = student_feats.shape[0]
        logits = self.logits(student_feats, teacher_feats, student_lens, teacher_lens)  # [B, B]
        if ids is not None:
            ids_list = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
            if len(ids_list) != batch:
                raise ValueError(f"ids must have one entry per item: {len(ids_list)} ids for batch {batch}")
            codes: dict = {}
            code = torch.tensor([codes.setdefault(i, len(codes)) for i in ids_list], device=logits.device)
            same = code.unsqueeze(0) == code.unsqueeze(1)  # [B, B]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        if batch < 2:
            finite = torch.where(torch.isfinite(logits), logits, torch.zeros((), device=logits.device))
            return finite.sum() * 0.0  # zero, but still connected to the graph so backward() works
        target = torch.arange(batch, device=logits.device)
        per_item = 0.5 * (
            F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
        )
        return per_item.mean()
