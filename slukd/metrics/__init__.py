"""Evaluation: SLURP scoring (official metrics), WER/CER, continual-learning metrics from a results matrix.

``metrics/caption.py`` (caption metrics) is imported by its own users, not from here.
"""

from slukd.metrics.continual import ContinualMetrics
from slukd.metrics.slurp_scorer import (
    PRF,
    SlurpFormatError,
    SlurpScores,
    load_gold,
    load_predictions,
    score_slurp,
    score_slurp_files,
)
from slukd.metrics.wer import cer, normalize_text, wer, write_wer_alignments

__all__ = [
    "PRF",
    "ContinualMetrics",
    "SlurpFormatError",
    "SlurpScores",
    "cer",
    "load_gold",
    "load_predictions",
    "normalize_text",
    "score_slurp",
    "score_slurp_files",
    "wer",
    "write_wer_alignments",
]
