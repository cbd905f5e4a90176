"""Weighted combination of the supervised loss and the KD terms, with weights from YAML.

Two modes:
- ``"alpha"`` (SLU paper): alpha = sqrt(n_mem / B) from the batch's memory mask;
  L = (1 - alpha) · L_sup + alpha · Σ_k w_k L_k (the KD terms are computed on the rows the Brain's ``kd_rows``
  selects: the memory items for SLU). A batch without memory items gives L = L_sup.
- ``"sum"`` (captioning paper): L = L_sup + Σ_k w_k L_k.

The training Brain (:class:`slukd.train.KDBrain`) builds it from the YAML's ``kd_mode`` and the weights of the active
KD terms (``kd_terms`` + ``extra_kd_terms``, e.g. ``seq_kd_weight: 1.0``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch

logger = logging.getLogger(__name__)

__all__ = ["memory_alpha", "KDObjective"]


def memory_alpha(is_memory: torch.Tensor) -> torch.Tensor:
    """alpha = sqrt(n_mem / B) for a boolean memory mask is_memory [B] (float32 scalar tensor, no gradient)."""
    m = torch.as_tensor(is_memory)
    if m.dim() != 1:
        raise ValueError(f"is_memory must be a 1-D mask [B], got shape {tuple(m.shape)}")
    if m.numel() == 0:
        raise ValueError("memory_alpha of an empty batch is undefined")
    if m.dtype != torch.bool:
        if bool(((m != 0) & (m != 1)).any()):
            raise ValueError("is_memory must be boolean (or 0/1)")
        m = m.bool()
    return torch.sqrt(m.float().sum() / m.numel())


class KDObjective:
    """Combine ``sup`` with named KD terms: ``total, parts = obj(sup, {"enc": l_e, "seq": l_s}, is_memory=mask)``.

    Args:
        weights: term name -> weight w_k (from YAML). A term with weight 0 is skipped (and may be left out of the
            call); :meth:`active` tells a recipe which terms to compute at all.
        mode: ``"alpha"`` or ``"sum"`` (see the module docstring).
        strict: an unknown term name (not in ``weights``) is an error, so a typo in YAML/recipe cannot silently
            drop a loss.

    ``parts`` holds floats for logging: ``sup``, each weighted-in raw term as ``kd_<name>``, ``alpha`` (alpha mode)
    and ``total``.
    """

    MODES = ("alpha", "sum")

    def __init__(self, weights: Mapping[str, float] | None = None, mode: str = "sum", strict: bool = True):
        if mode not in self.MODES:
            raise ValueError(f"KDObjective mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.strict = strict
        self.weights: dict[str, float] = {}
        for name, w in dict(weights or {}).items():
            try:
                wf = float(w)
            except (TypeError, ValueError) as err:
                raise ValueError(f"KDObjective weight {name!r} must be a number, got {w!r}") from err
            if not math.isfinite(wf) or wf < 0:
                raise ValueError(f"KDObjective weight {name!r} must be finite and >= 0, got {w!r}")
            self.weights[str(name)] = wf

    def active(self, name: str) -> bool:
        """Whether term ``name`` has a non-zero weight (compute it only then)."""
        return self.weights.get(name, 0.0) > 0

    @property
    def active_terms(self) -> list[str]:
        return [k for k, w in self.weights.items() if w > 0]

    def __call__(
        self,
        sup: torch.Tensor,
        kd: Mapping[str, torch.Tensor] | None = None,
        is_memory: torch.Tensor | None = None,
        alpha: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts. Alpha mode needs ``is_memory`` [B] (or an explicit ``alpha``)."""
        kd = dict(kd or {})
        unknown = sorted(set(kd) - set(self.weights))
        if unknown and self.strict:
            raise KeyError(f"KD terms {unknown} have no weight in KDObjective (configured: {sorted(self.weights)})")
        missing = [k for k in self.active_terms if k not in kd]
        if missing:
            raise KeyError(f"KD terms {missing} have non-zero weights but were not computed")
        parts: dict[str, float] = {"sup": float(sup.detach())}
        kd_sum = sup.new_zeros(())
        for name in self.active_terms:
            term = kd[name]
            kd_sum = kd_sum + self.weights[name] * term
            parts[f"kd_{name}"] = float(term.detach())
        if self.mode == "sum":
            total = sup + kd_sum
        else:
            if alpha is None:
                if is_memory is None:
                    raise ValueError("KDObjective(mode='alpha') needs is_memory (or alpha) for each batch")
                alpha = memory_alpha(is_memory)
            a = torch.as_tensor(alpha, dtype=sup.dtype, device=sup.device)
            if not 0.0 <= float(a) <= 1.0:
                raise ValueError(f"alpha must lie in [0, 1], got {float(a)}")
            total = (1 - a) * sup + a * kd_sum
            parts["alpha"] = float(a)
        parts["total"] = float(total.detach())
        return total, parts

    def __repr__(self) -> str:
        return f"KDObjective(mode={self.mode!r}, weights={self.weights})"
