"""Greedy and batched beam search over the incremental (key/value cached) decoder of :class:`Seq2Seq`.

Every step feeds only the last token of each hypothesis (``model.step``): self-attention keys/values are cached per
layer, encoder keys/values are computed once (``model.init_state``), and the hypotheses of one utterance share them.
Utterances finish independently and are dropped from the batch as soon as they do.

Beam search follows SpeechBrain's ``S2SBeamSearcher`` (1.1.2) where it defines the result:

- running score of a hypothesis = sum of its token log-probs; candidates are ranked by
  ``(score + log p(token)) / (step + 1)`` when ``length_normalization`` (else the raw sum), top ``beam_size`` over
  ``beam_size x V`` per utterance; the first step expands beam 0 only;
- a candidate ending in EOS leaves the beam (its slot is dead for the next step) and is stored with the normalised
  score it was ranked with, while the utterance has fewer than ``beam_size`` finished hypotheses;
- an utterance is done when it has ``beam_size`` finished hypotheses, or at its maximum length, where the live
  hypotheses fill the remaining slots (without EOS) with their last normalised score;
- EOS is forbidden (log-prob -1e20) before the minimum length; with ``eos_threshold`` (SpeechBrain's
  ``using_eos_threshold``), EOS is only allowed when ``log p(eos) > eos_threshold * max_v log p(v)``;
- the result is the top ``nbest`` of the finished hypotheses by score.

``length_penalty=alpha`` replaces the length normalisation by the SLU authors' scoring (their public
``beam_search``): the log-prob of the token chosen at step t (1-based) is divided by ``((5 + t) / 6) ** alpha``
before it joins the running score, and hypotheses are ranked by that running score.

Lengths: SpeechBrain bounds every utterance of a batch by ``int(ratio * T')`` with T' the *padded* number of encoder
frames; here each utterance is bounded by ``int(ratio * its valid frames)`` (``round(wav_len * T')``), so results do
not depend on the batch. ``speechbrain_compat=True`` restores SpeechBrain's batch-level bounds and its handling of
hypotheses cut at the maximum length (SpeechBrain drops their last token), for one-to-one comparisons.

Two implementations give the same hypotheses (up to float rounding of the attention sums):

- the dynamic path (the default on CPU, :mod:`.dynamic`): per-step tensors grow with the step and shrink as
  utterances finish, with host-side bookkeeping at every step (fastest when kernel launches are cheap, i.e. on CPU);
- the shape-static path (``static=True``; the default on CUDA, where it is captured once in a CUDA graph and
  replayed, ``cuda_graph``; :mod:`.cuda_graph`): preallocated buffers for every row and step, every row computed at
  every step, the hypotheses rebuilt on the host from the per-step history after the loop.

Greedy search is argmax decoding; SpeechBrain's greedy searcher uses ``min_decode_ratio`` to *shorten* the maximum
length (it runs ``max - min`` steps); here it is a minimum length (EOS forbidden before it) as in beam search. With
the default ``min_decode_ratio=0`` both agree.

Modules: :mod:`.dynamic` (the public :func:`greedy_search`, :func:`beam_search`, :func:`decode_batch` and the dynamic
path), :mod:`.cuda_graph` (the shape-static path and its graph cache), :mod:`.sb_adapter` (SpeechBrain's stock
searchers on the same model, for tests and benchmarks), :mod:`.common` (:class:`Hypothesis`, shared by both paths).
The public names are re-exported here; the module-level settings of the static path (``_capture_failed``,
``_CHECK_EVERY_CUDA``, ``_GRAPH_CACHE_SIZE``) live in :mod:`.cuda_graph` and are read and set there.
"""

from __future__ import annotations

from slukd.models.decoding.common import Hypothesis
from slukd.models.decoding.cuda_graph import clear_graph_cache
from slukd.models.decoding.dynamic import beam_search, decode_batch, greedy_search
from slukd.models.decoding.sb_adapter import StockSearcherAdapter, stock_searcher

__all__ = [
    "Hypothesis",
    "StockSearcherAdapter",
    "beam_search",
    "clear_graph_cache",
    "decode_batch",
    "greedy_search",
    "stock_searcher",
]
