"""Sequence-level knowledge distillation: decoder targets from token lists and the pad-aware cross-entropy.

The teacher's beam-search hypotheses come from :class:`slukd.distill.targets.TeacherTargets` (computed once per
teacher and cached by item ID); :class:`slukd.distill.terms.SeqKD` trains the student on them with
:func:`seq_targets` + :func:`sequence_nll`, the same cross-entropy as the supervised target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

__all__ = ["SeqTargets", "seq_targets", "sequence_nll"]


@dataclass
class SeqTargets:
    """Decoder targets in SpeechBrain's layout for the batch rows ``rows``.

    tokens_bos [N, L+1] = [bos, y_1..y_n, pad...]; tokens_eos [N, L+1] = [y_1..y_n, eos, pad...];
    lens [N] relative lengths of tokens_bos/eos ((n+1)/(L+1)); tokens [N, L], tokens_lens [N] relative (n/L, an
    empty target gives 0); rows [N] the batch indices these targets belong to (select encoder outputs with it).
    """

    tokens_bos: torch.Tensor
    tokens_eos: torch.Tensor
    lens: torch.Tensor
    tokens: torch.Tensor
    tokens_lens: torch.Tensor
    rows: torch.Tensor

    def to(self, device: str | torch.device) -> SeqTargets:
        return SeqTargets(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def seq_targets(
    token_lists: Sequence[Sequence[int]],
    bos_index: int,
    eos_index: int,
    pad_index: int = 0,
    rows: Sequence[int] | torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> SeqTargets:
    """Pad token lists into :class:`SeqTargets` (see there for shapes); ``rows`` defaults to 0..N-1."""
    n = len(token_lists)
    seqs = [[int(t) for t in toks] for toks in token_lists]
    max_len = max((len(s) for s in seqs), default=0)
    tokens = torch.full((n, max_len), pad_index, dtype=torch.long)
    tokens_bos = torch.full((n, max_len + 1), pad_index, dtype=torch.long)
    tokens_eos = torch.full((n, max_len + 1), pad_index, dtype=torch.long)
    for i, s in enumerate(seqs):
        k = len(s)
        if k:
            tokens[i, :k] = torch.tensor(s, dtype=torch.long)
            tokens_bos[i, 1 : k + 1] = tokens[i, :k]
            tokens_eos[i, :k] = tokens[i, :k]
        tokens_bos[i, 0] = bos_index
        tokens_eos[i, k] = eos_index
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.float32)
    lens = (lengths + 1) / (max_len + 1)
    tokens_lens = lengths / max_len if max_len else torch.zeros(n)
    rows_t = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    if rows_t.shape != (n,):
        raise ValueError(f"rows must have one index per target: {tuple(rows_t.shape)} for {n} targets")
    out = SeqTargets(tokens_bos, tokens_eos, lens, tokens, tokens_lens, rows_t)
    return out.to(device) if device is not None else out


def sequence_nll(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    lens: torch.Tensor | None = None,
    pad_index: int | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Token cross-entropy that ignores padding: the CE of seq-KD (and of the supervised target).

    log_probs [B, L, V] (log-softmax outputs), targets [B, L] (e.g. ``tokens_eos``), lens [B] relative lengths
    (valid positions = first round(lens_b · L)) and/or pad_index (positions equal to it are ignored).
    loss = Σ_{b,l} m_bl CE_bl / Σ_{b,l} m_bl, CE_bl = -(1-ε) log p(y_bl) - ε/V Σ_v log p(v); 0 if none.
    """
    if log_probs.dim() != 3 or targets.shape != log_probs.shape[:2]:
        raise ValueError(f"need log_probs [B, L, V] and targets [B, L], got {tuple(log_probs.shape)}, {targets.shape}")
    batch, length, vocab = log_probs.shape
    mask = torch.ones(batch, length, dtype=torch.bool, device=log_probs.device)
    if lens is not None:
        n_valid = torch.round(lens.to(log_probs.device).float() * length).long().clamp(0, length)
        mask &= torch.arange(length, device=log_probs.device).unsqueeze(0) < n_valid.unsqueeze(1)
    if pad_index is not None:
        mask &= targets != pad_index
    m = mask.float()
    lp = log_probs.float()
    nll = -lp.gather(-1, targets.clamp(0, vocab - 1).unsqueeze(-1)).squeeze(-1)  # [B, L]
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll - label_smoothing * lp.mean(dim=-1)
    nll = torch.where(m > 0, nll, torch.zeros((), device=nll.device))
    denom = m.sum()
    if float(denom) == 0.0:
        return nll.sum() * 0.0
    return (nll * m).sum() / denom
