"""Word and character error rates of transcripts (jiwer), after a stated text normalisation.

Normalisation (:func:`normalize_text`), applied to references and hypotheses alike:

1. Unicode NFKC, then lower case;
2. typographic apostrophes (U+2019, U+2018, U+02BC) become ``'``;
3. every punctuation character (Unicode category ``P*``) becomes a space, except an apostrophe with a letter or digit
   on both sides ("don't", "jessica's" are kept; "'quoted'" loses its quotes; SLURP's token "'s" becomes "s");
   hyphens and slashes therefore split words ("well-known" -> "well known"); symbols (category ``S*``: ``$ + = ^``)
   are kept, while ``% & # @ *`` are punctuation (``Po``) and removed;
4. whitespace runs collapse to one space; leading/trailing space is removed.

Corpus-level rates: ``WER = (S + D + I) / N`` with N the number of reference words summed over all pairs (not a mean
of per-utterance rates); ``CER`` likewise on characters of the normalised strings, single spaces included.

Empty references (after normalisation) never crash: their hypothesis words count as insertions and add nothing to N.
When the whole reference side is empty (N = 0) the rate is 0.0 if there are no errors, else 1.0 (a warning is logged).

:func:`write_wer_alignments` writes a SpeechBrain-style ``wer.txt`` (corpus summary, then each utterance's alignment)
after the same normalisation, so its ``%WER`` line is ``100 * wer(refs, hyps)``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer

logger = logging.getLogger(__name__)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower case, punctuation -> space except word-internal apostrophes, collapsed whitespace (see module doc)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    chars = list(text)
    n = len(chars)
    for i, c in enumerate(chars):
        if not unicodedata.category(c).startswith("P"):
            continue
        if c == "'" and 0 < i < n - 1 and chars[i - 1].isalnum() and chars[i + 1].isalnum():
            continue
        chars[i] = " "
    return _WS.sub(" ", "".join(chars)).strip()


@dataclass(frozen=True)
class ErrorCounts:
    """Alignment counts summed over all pairs. ``rate = (S + D + I) / N`` (N = reference units)."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    n_ref: int
    n_empty_refs: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.n_ref == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.n_ref


def _prepare(refs: str | Sequence[str], hyps: str | Sequence[str], normalize: bool) -> tuple[list[str], list[str]]:
    if isinstance(refs, str):
        refs = [refs]
    if isinstance(hyps, str):
        hyps = [hyps]
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    for name, seq in (("reference", refs), ("hypothesis", hyps)):
        for i, s in enumerate(seq):
            if not isinstance(s, str):
                raise TypeError(f"{name} {i} is {type(s).__name__}, not str")
    if normalize:
        refs = [normalize_text(r) for r in refs]
        hyps = [normalize_text(h) for h in hyps]
    else:
        refs = [_WS.sub(" ", r).strip() for r in refs]
        hyps = [_WS.sub(" ", h).strip() for h in hyps]
    return refs, hyps


def _counts(refs: list[str], hyps: list[str], unit: str) -> ErrorCounts:
    n_empty = sum(1 for r in refs if not r)
    if n_empty == len(refs):  # jiwer needs at least one non-empty reference; everything is an insertion
        ins = sum(len(h.split()) if unit == "word" else len(h) for h in hyps)
        if ins:
            logger.warning("every reference is empty: %s rate set to 1.0", unit)
        return ErrorCounts(0, 0, ins, 0, 0, n_empty)
    if unit == "word":
        out = jiwer.process_words(refs, hyps)
        n_ref = sum(len(r.split()) for r in refs)
    else:
        out = jiwer.process_characters(refs, hyps)
        n_ref = sum(len(r) for r in refs)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits, n_ref, n_empty)


def wer_counts(refs: str | Sequence[str], hyps: str | Sequence[str], normalize: bool = True) -> ErrorCounts:
    """Word-level alignment counts (corpus level) after :func:`normalize_text` (or only whitespace collapsing)."""
    return _counts(*_prepare(refs, hyps, normalize), unit="word")


def cer_counts(refs: str | Sequence[str], hyps: str | Sequence[str], normalize: bool = True) -> ErrorCounts:
    """Character-level alignment counts (corpus level, spaces count as characters)."""
    return _counts(*_prepare(refs, hyps, normalize), unit="char")


def wer(refs: str | Sequence[str], hyps: str | Sequence[str], normalize: bool = True) -> float:
    """Corpus WER = (S + D + I) / N_ref_words over all pairs, after normalisation. Fraction, not percent."""
    return wer_counts(refs, hyps, normalize).rate


def cer(refs: str | Sequence[str], hyps: str | Sequence[str], normalize: bool = True) -> float:
    """Corpus CER = (S + D + I) / N_ref_chars over all pairs, after normalisation. Fraction, not percent."""
    return cer_counts(refs, hyps, normalize).rate


def write_wer_alignments(
    path: str | os.PathLike,
    ids: Sequence[str],
    refs: Sequence[str],
    hyps: Sequence[str],
    normalize: bool = True,
) -> dict[str, Any]:
    """Write a SpeechBrain-style ``wer.txt``: corpus summary, then per utterance its WER line and alignment.

    Text goes through :func:`normalize_text` (as for :func:`wer`) and is split on spaces; the alignment is
    SpeechBrain's (``wer_details_for_batch`` + ``print_wer_summary`` / ``print_alignments``), whose edit count equals
    jiwer's, so ``%WER = 100 * (S + D + I) / N`` is ``100 * wer(refs, hyps)``. With no reference word at all the project
    policy holds (100 when anything was said, not SpeechBrain's 0). The file is written atomically.

    Returns:
        SpeechBrain's summary dict (``WER`` and ``SER`` in percent, ``num_edits``, ``num_scored_tokens``,
        ``insertions``, ``deletions``, ``substitutions``, ...).
    """
    from speechbrain.dataio.wer import print_alignments, print_wer_summary
    from speechbrain.utils.edit_distance import wer_details_for_batch, wer_summary

    from slukd.utils.io import atomic_write_text

    ids = [ids] if isinstance(ids, str) else list(ids)
    refs_n, hyps_n = _prepare(refs, hyps, normalize)
    if len(ids) != len(refs_n):
        raise ValueError(f"{len(ids)} utterance IDs but {len(refs_n)} references")
    if not ids:
        raise ValueError(f"no utterances to align for {path}")
    for i, utt in enumerate(ids):
        if not isinstance(utt, str):
            raise TypeError(f"utterance ID {i} is {type(utt).__name__}, not str")
    seen: set[str] = set()
    for utt in ids:
        if utt in seen:
            raise ValueError(f"duplicate utterance ID {utt!r}")
        seen.add(utt)
    details = wer_details_for_batch(
        ids, [r.split() for r in refs_n], [h.split() for h in hyps_n], compute_alignments=True
    )
    summary = wer_summary(details)
    if summary["num_scored_tokens"] == 0 and summary["num_edits"] > 0:
        summary["WER"] = 100.0  # project policy for N = 0 (see the module docstring)
    buf = io.StringIO()
    print_wer_summary(summary, file=buf)
    norm = "normalize_text (NFKC, lower case, punctuation removed, word-internal apostrophes kept)"
    print(f"Text normalisation: {norm if normalize else 'whitespace only'}", file=buf)
    print_alignments(details, file=buf)
    atomic_write_text(Path(path), buf.getvalue())
    return summary
