"""The distillation core, task agnostic: every KD method of both recipes (SLU and audio captioning).

- encoder-level: :func:`masked_mean`, :class:`EncoderMSE`, :class:`EncoderContrastive`
- token-level: :class:`TokenKL`
- sequence-level: :class:`PseudoLabeler`, :class:`SeqKDTargets`, :func:`seq_targets`, :func:`sequence_nll`
- teachers: :class:`Teacher`, :func:`fingerprint_state_dict`
- combination: :func:`memory_alpha`, :class:`KDObjective`
"""

from slukd.distill.encoder import EncoderContrastive, EncoderMSE, frame_mask, masked_mean
from slukd.distill.objective import KDObjective, memory_alpha
from slukd.distill.sequence import PseudoLabeler, SeqKDTargets, SeqTargets, batch_ids, seq_targets, sequence_nll
from slukd.distill.teacher import Teacher, fingerprint_state_dict
from slukd.distill.token import TokenKL

__all__ = [
    "masked_mean",
    "frame_mask",
    "EncoderMSE",
    "EncoderContrastive",
    "TokenKL",
    "PseudoLabeler",
    "SeqKDTargets",
    "SeqTargets",
    "seq_targets",
    "sequence_nll",
    "batch_ids",
    "Teacher",
    "fingerprint_state_dict",
    "KDObjective",
    "memory_alpha",
]
