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

Lengths: SpeechBrain bounds every utterance of a batch by ``int(ratio * T')`` with T' the *padded* number of encoder
frames; here each utterance is bounded by ``int(ratio * its valid frames)`` (``round(wav_len * T')``), so results do
not depend on the batch. ``speechbrain_compat=True`` restores SpeechBrain's batch-level bounds and its handling of
hypotheses cut at the maximum length (SpeechBrain drops their last token), for one-to-one comparisons.

Greedy search is argmax decoding; SpeechBrain's greedy searcher uses ``min_decode_ratio`` to *shorten* the maximum
length (it runs ``max - min`` steps); here it is a minimum length (EOS forbidden before it) as in beam search. With
the default ``min_decode_ratio=0`` both agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slukd.models.seq2seq import Seq2Seq

logger = logging.getLogger(__name__)

__all__ = [
    "Hypothesis",
    "StockSearcherAdapter",
    "beam_search",
    "decode_batch",
    "greedy_search",
    "stock_searcher",
]

MINUS_INF = -1e20  # SpeechBrain's value for blocked tokens


@dataclass
class Hypothesis:
    """A decoded sequence (without bos/eos) and its score (length-normalised sum of log-probs when enabled)."""

    tokens: list[int]
    score: float
    finished: bool = True  # False when cut at the maximum length


def _step_limits(
    model: Seq2Seq,
    enc: Tensor,
    wav_lens: Tensor,
    min_decode_ratio: float,
    max_decode_ratio: float,
    max_len: int | None,
    speechbrain_compat: bool,
) -> tuple[list[int], list[int]]:
    """Per-utterance (min_steps, max_steps): int(ratio * frames) with frames = valid (or padded, compat) frames."""
    if not 0.0 <= min_decode_ratio <= max_decode_ratio:
        raise ValueError(f"need 0 <= min_decode_ratio <= max_decode_ratio, got {min_decode_ratio}, {max_decode_ratio}")
    if speechbrain_compat:
        frames = [enc.shape[1]] * enc.shape[0]
    else:
        frames = model.num_valid_frames(enc, wav_lens).tolist()
    max_steps = [max(1, int(f * max_decode_ratio)) for f in frames]
    if max_len is not None:
        max_steps = [min(m, max_len) for m in max_steps]
    min_steps = [min(int(f * min_decode_ratio), m) for f, m in zip(frames, max_steps)]
    return min_steps, max_steps


def _block_eos_before_min(log_probs: Tensor, eos: int, t: int, min_steps: list[int], group: int) -> Tensor:
    """Set log p(eos) to -1e20 on the rows of utterances with fewer than min_steps tokens."""
    block = [t < m for m in min_steps]
    if any(block):
        rows = torch.tensor(block, device=log_probs.device).repeat_interleave(group)
        log_probs[:, eos] = log_probs[:, eos].masked_fill(rows, MINUS_INF)
    return log_probs


@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    enc: Tensor,
    wav_lens: Tensor,
    max_decode_ratio: float = 1.0,
    min_decode_ratio: float = 0.0,
    max_len: int | None = None,
    speechbrain_compat: bool = False,
) -> list[list[int]]:
    """Argmax decoding. enc [B, T', D], wav_lens [B] -> B token lists (without bos/eos)."""
    b = enc.shape[0]
    eos = model.eos_index
    min_steps, max_steps = _step_limits(
        model, enc, wav_lens, min_decode_ratio, max_decode_ratio, max_len, speechbrain_compat
    )
    state = model.init_state(enc, wav_lens, group=1)
    active = list(range(b))
    inp = torch.full((b,), model.bos_index, dtype=torch.long, device=enc.device)
    seq = torch.empty(b, 0, dtype=torch.long, device=enc.device)
    out: list[list[int]] = [[] for _ in range(b)]
    t = 0
    while active:
        log_probs, state = model.step(inp, state)
        log_probs = _block_eos_before_min(log_probs, eos, t, [min_steps[i] for i in active], 1)
        inp = log_probs.argmax(dim=-1)
        seq = torch.cat([seq, inp[:, None]], dim=1)
        ended = (inp == eos).tolist()
        t += 1
        done = [j for j, i in enumerate(active) if ended[j] or t >= max_steps[i]]
        if not done:
            continue
        rows = seq[done].tolist()
        for j, toks in zip(done, rows):
            out[active[j]] = toks[:-1] if ended[j] else toks
        done_set = set(done)
        keep = [j for j in range(len(active)) if j not in done_set]
        active = [active[j] for j in keep]
        if active:
            idx = torch.tensor(keep, device=enc.device)
            state = model.reorder_state(state, idx)
            inp, seq = inp[idx], seq[idx]
    return out


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    enc: Tensor,
    wav_lens: Tensor,
    beam_size: int = 5,
    nbest: int = 1,
    length_normalization: bool = True,
    min_decode_ratio: float = 0.0,
    max_decode_ratio: float = 1.0,
    max_len: int | None = None,
    eos_threshold: float | None = None,
    temperature: float = 1.0,
    speechbrain_compat: bool = False,
) -> list[list[Hypothesis]]:
    """Batched beam search (see the module docstring). enc [B, T', D] -> per utterance its top ``nbest`` hypotheses."""
    if beam_size < 1 or not 1 <= nbest <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= nbest <= beam_size, got {beam_size}, {nbest}")
    b, k, v, eos = enc.shape[0], beam_size, model.vocab_size, model.eos_index
    dev = enc.device
    min_steps, max_steps = _step_limits(
        model, enc, wav_lens, min_decode_ratio, max_decode_ratio, max_len, speechbrain_compat
    )
    state = model.init_state(enc, wav_lens, group=k)
    active = list(range(b))  # original index of each row group
    sum_scores = torch.full((b * k,), float("-inf"), device=dev)
    sum_scores[::k] = 0.0
    inp = torch.full((b * k,), model.bos_index, dtype=torch.long, device=dev)
    seq = torch.empty(b * k, 0, dtype=torch.long, device=dev)
    offsets = torch.arange(b, device=dev)[:, None] * k
    # finished[i]: list of (tokens incl. a final eos if ended, score, ended_with_eos) in SpeechBrain's insertion order
    finished: list[list[tuple[list[int], float, bool]]] = [[] for _ in range(b)]
    t = 0
    while active:
        n_a = len(active)
        log_probs, state = model.step(inp, state, temperature=temperature)
        log_probs = _block_eos_before_min(log_probs, eos, t, [min_steps[i] for i in active], k)
        if eos_threshold is not None:
            allowed = log_probs[:, eos] > eos_threshold * log_probs.max(dim=-1).values
            log_probs[:, eos] = log_probs[:, eos].masked_fill(~allowed, MINUS_INF)
        scores = sum_scores[:, None] + log_probs
        if length_normalization:
            scores = scores / (t + 1)
        top, cand = scores.view(n_a, k * v).topk(k, dim=-1)  # [n_a, K]
        tokens = (cand % v).view(-1)
        pred = (torch.div(cand, v, rounding_mode="floor") + offsets[:n_a]).view(-1)
        sum_scores = (top * (t + 1) if length_normalization else top).view(-1)
        state = model.reorder_state(state, pred, same_items=True)
        seq = torch.cat([seq.index_select(0, pred), tokens[:, None]], dim=1)
        is_eos = tokens == eos
        t += 1

        eos_rows = is_eos.nonzero().view(-1).tolist()
        at_max = [j for j, i in enumerate(active) if t >= max_steps[i]]
        if eos_rows or at_max:
            top_cpu = top.tolist()
            rows, recs = [], []  # rows of seq to keep, (item, score, ended)
            for r in eos_rows:
                j = r // k
                i = active[j]
                if len(finished[i]) + sum(1 for it, _, _ in recs if it == i) < k:
                    rows.append(r)
                    recs.append((i, top_cpu[j][r % k], True))
            eos_set = set(eos_rows)
            for j in at_max:
                i = active[j]
                n_have = len(finished[i]) + sum(1 for it, _, _ in recs if it == i)
                for kk in range(k):
                    if n_have >= k:
                        break
                    if j * k + kk in eos_set:
                        continue
                    rows.append(j * k + kk)
                    recs.append((i, top_cpu[j][kk], False))
                    n_have += 1
            if rows:
                kept = seq.index_select(0, torch.tensor(rows, device=dev)).tolist()  # one transfer per event
                for row, (i, score, ended) in zip(kept, recs):
                    finished[i].append((row, score, ended))
        sum_scores = sum_scores.masked_fill(is_eos, float("-inf"))
        inp = tokens

        done = [j for j, i in enumerate(active) if len(finished[i]) >= k or t >= max_steps[i]]
        if done:
            done_set = set(done)
            keep = [j for j in range(n_a) if j not in done_set]
            active = [active[j] for j in keep]
            if active:
                idx = (torch.tensor(keep, device=dev)[:, None] * k + torch.arange(k, device=dev)).view(-1)
                state = model.reorder_state(state, idx)
                seq, sum_scores, inp = (
                    seq.index_select(0, idx),
                    sum_scores.index_select(0, idx),
                    inp.index_select(0, idx),
                )

    results: list[list[Hypothesis]] = []
    for i in range(b):
        scores_i = torch.tensor([s for _, s, _ in finished[i]])
        order = scores_i.topk(min(nbest, len(finished[i]))).indices.tolist()
        hyps = []
        for o in order:
            toks, score, ended = finished[i][o]
            if ended or speechbrain_compat:
                toks = toks[:-1]
            hyps.append(Hypothesis(tokens=toks, score=score, finished=ended))
        results.append(hyps)
    return results


@torch.no_grad()
def decode_batch(
    model: Seq2Seq,
    wavs: Tensor,
    wav_lens: Tensor,
    beam_size: int = 5,
    **kwargs,
) -> list[list[int]]:
    """Encode wavs [B, S] and return the best token list of each utterance (greedy when beam_size == 1).

    ``kwargs`` go to :func:`greedy_search` / :func:`beam_search` (ratios, max_len, length_normalization, ...).
    """
    enc = model.encode(wavs, wav_lens)
    if beam_size == 1:
        return greedy_search(model, enc, wav_lens, **kwargs)
    return [h[0].tokens for h in beam_search(model, enc, wav_lens, beam_size=beam_size, **kwargs)]


# ----------------------------------------------------------------------------------------------------------------------
# SpeechBrain's stock searchers on the same model (reference for tests and benchmarks)
# ----------------------------------------------------------------------------------------------------------------------
class StockSearcherAdapter(nn.Module):
    """Exposes ``decode(tgt, encoder_out, enc_len) -> (hidden [N, L, d_model], None)`` like ``TransformerASR.decode``.

    It runs the model's SpeechBrain ``TransformerDecoder`` over the whole prefix (what the stock searchers expect).
    """

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    @torch.no_grad()
    def decode(self, tgt: Tensor, encoder_out: Tensor, enc_len: Tensor | None = None) -> tuple[Tensor, None]:
        return self.model.decoder_hidden(encoder_out, enc_len, tgt), None


class _OutputLayer(nn.Module):
    """The model's output linear with the ``.w`` attribute SpeechBrain's searchers read (``fc.w.out_features``)."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.w = lin

    def forward(self, x: Tensor) -> Tensor:
        return self.w(x)


def stock_searcher(
    model: Seq2Seq,
    beam_size: int = 5,
    *,
    greedy: bool = False,
    length_normalization: bool = True,
    min_decode_ratio: float = 0.0,
    max_decode_ratio: float = 1.0,
    eos_threshold: float | None = None,
    temperature: float = 1.0,
    topk: int = 1,
) -> nn.Module:
    """SpeechBrain's ``S2STransformerBeamSearcher`` (or ``S2STransformerGreedySearcher``) on ``model``.

    Call it as ``hyps, lens, scores, log_probs = searcher(enc, wav_lens)``.
    """
    from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher, S2STransformerGreedySearcher

    modules: Sequence[nn.Module] = [StockSearcherAdapter(model), _OutputLayer(model.out_lin)]
    common = dict(
        bos_index=model.bos_index,
        eos_index=model.eos_index,
        min_decode_ratio=min_decode_ratio,
        max_decode_ratio=max_decode_ratio,
    )
    if greedy:
        return S2STransformerGreedySearcher(modules=modules, temperature=0.0, **common)
    return S2STransformerBeamSearcher(
        modules=modules,
        beam_size=beam_size,
        length_normalization=length_normalization,
        using_eos_threshold=eos_threshold is not None,
        eos_threshold=1.5 if eos_threshold is None else eos_threshold,
        temperature=temperature,
        return_topk=topk > 1,
        topk=topk,
        **common,
    )
