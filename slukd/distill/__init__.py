"""The distillation core, task agnostic: every KD method of both recipes (SLU and audio captioning).

- KD terms as modules (:mod:`.terms`): :class:`EncoderKD` (MSE or contrastive, on pooled encoder outputs; the SLU
  paper's audio-KD), :class:`TokenKD`, :class:`SeqKD`, the :class:`KDTerm` base and the :class:`KDContext` they read
- the losses behind them: :func:`masked_mean`, :class:`EncoderMSE`, :class:`EncoderContrastive`, :class:`TokenKL`,
  :func:`seq_targets`, :func:`sequence_nll`
- teacher side: :class:`Teacher` (frozen snapshot), :class:`TeacherTargets` (hypotheses and embeddings cached on
  disk by teacher fingerprint), :func:`fingerprint_state_dict`
- combination: :class:`KDObjective` (the SLU paper's alpha weighting or a plain sum), :func:`memory_alpha`
"""

from slukd.distill.encoder import EncoderContrastive, EncoderMSE, frame_mask, masked_mean
from slukd.distill.objective import KDObjective, memory_alpha
from slukd.distill.sequence import SeqTargets, seq_targets, sequence_nll
from slukd.distill.targets import TeacherTargets, batch_ids
from slukd.distill.teacher import Teacher, fingerprint_state_dict
from slukd.distill.terms import NEEDS, TEACHER_NEEDS, EncoderKD, KDContext, KDTerm, SeqKD, TokenKD, check_terms
from slukd.distill.token import TokenKL

__all__ = [
    "masked_mean",
    "frame_mask",
    "EncoderMSE",
    "EncoderContrastive",
    "TokenKL",
    "SeqTargets",
    "seq_targets",
    "sequence_nll",
    "batch_ids",
    "TeacherTargets",
    "Teacher",
    "fingerprint_state_dict",
    "KDObjective",
    "memory_alpha",
    "NEEDS",
    "TEACHER_NEEDS",
    "KDContext",
    "KDTerm",
    "EncoderKD",
    "TokenKD",
    "SeqKD",
    "check_terms",
]
