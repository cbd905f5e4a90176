"""Definitions shared by the dynamic path (:mod:`.dynamic`) and the shape-static path (:mod:`.cuda_graph`).

They live apart from both so that neither path imports the other's module for them (the dynamic entry points
dispatch to the static path; the static path builds the same :class:`Hypothesis` results).
"""

from __future__ import annotations

from dataclasses import dataclass

MINUS_INF = -1e20  # SpeechBrain's value for blocked tokens


@dataclass
class Hypothesis:
    """A decoded sequence (without bos/eos) and its score (length-normalised sum of log-probs when enabled)."""

    tokens: list[int]
    score: float
    finished: bool = True  # False when cut at the maximum length
