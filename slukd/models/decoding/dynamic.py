"""The public decoders (greedy, batched beam search, encode + decode) and their dynamic-shape implementation.

:func:`greedy_search` and :func:`beam_search` compute per-utterance step limits (:func:`_step_limits`), then run either
the shape-static path of :mod:`.cuda_graph` (``static`` / ``cuda_graph``; the default on CUDA) or the dynamic path
here (the default on CPU). Both give the same hypotheses, defined in the package docstring.

Dynamic path: every step feeds only the last token of each hypothesis (``model.step``) with the key/value cache of
``model.init_state``; per-step tensors grow with the step and shrink as utterances finish (finished utterances are
dropped from the batch, ``model.reorder_state``), with host-side bookkeeping at every step (fastest when kernel
launches are cheap, i.e. on CPU). Beam search keeps, per live row, its token sequence ``seq`` [N, t] and running score
``sum_scores`` [N] (N = live utterances x beam); the hypotheses that leave the beam are stored per utterance in
SpeechBrain's insertion order (:func:`_store_finished`) and the top ``nbest`` are picked at the end
(:func:`_top_hypotheses`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from slukd.models.decoding.common import MINUS_INF, Hypothesis
from slukd.models.decoding.cuda_graph import _resolve_path, _static_search
from slukd.models.seq2seq import Seq2Seq

__all__ = ["Hypothesis", "beam_search", "decode_batch", "greedy_search"]

#: per utterance: (tokens incl. a final eos if ended, ranking score, ended with eos), in SpeechBrain's insertion order
_Finished = list[list[tuple[list[int], float, bool]]]


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


# ----------------------------------------------------------------------------------------------------------------------
# Greedy search
# ----------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    enc: Tensor,
    wav_lens: Tensor,
    max_decode_ratio: float = 1.0,
    min_decode_ratio: float = 0.0,
    max_len: int | None = None,
    speechbrain_compat: bool = False,
    *,
    static: bool | None = None,
    cuda_graph: bool | None = None,
) -> list[list[int]]:
    """Argmax decoding. enc [B, T', D], wav_lens [B] -> B token lists (without bos/eos).

    ``static`` / ``cuda_graph``: the shape-static path, captured in a CUDA graph (see :mod:`.cuda_graph`); None =
    automatic (graph on CUDA in eval mode, the dynamic path elsewhere).
    """
    min_steps, max_steps = _step_limits(
        model, enc, wav_lens, min_decode_ratio, max_decode_ratio, max_len, speechbrain_compat
    )
    use_static, use_graph = _resolve_path(model, enc, static, cuda_graph)
    if use_static:
        res = _static_search(
            model,
            enc,
            wav_lens,
            1,
            min_steps,
            max_steps,
            greedy=True,
            cuda_graph=use_graph,
            cuda_graph_explicit=bool(cuda_graph),
        )
        if res is not None:
            runner, t_run = res
            return runner.greedy_results(t_run, max_steps)
    return _greedy_dynamic(model, enc, wav_lens, min_steps, max_steps)


def _greedy_dynamic(
    model: Seq2Seq, enc: Tensor, wav_lens: Tensor, min_steps: list[int], max_steps: list[int]
) -> list[list[int]]:
    """The dynamic greedy loop: argmax per step; an utterance leaves the batch at its first EOS or max length."""
    b = enc.shape[0]
    eos = model.eos_index
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


# ----------------------------------------------------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------------------------------------------------
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
    *,
    static: bool | None = None,
    cuda_graph: bool | None = None,
    length_penalty: float | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search (see the package docstring). enc [B, T', D] -> per utterance its top ``nbest`` hypotheses.

    ``length_penalty`` (alpha, None: off): the SLU authors' scoring instead of ``length_normalization``: the
    log-prob of the token chosen at step t (1-based) is divided by ``((5 + t) / 6) ** alpha`` before it is added to
    the running score, and hypotheses are ranked by that sum, ``score = sum_t log p_t / ((5 + t) / 6) ** alpha``.

    ``static`` / ``cuda_graph``: the shape-static path, captured in a CUDA graph (see :mod:`.cuda_graph`); None =
    automatic (graph on CUDA in eval mode, the dynamic path elsewhere). Both paths give the same hypotheses.
    """
    if beam_size < 1 or not 1 <= nbest <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= nbest <= beam_size, got {beam_size}, {nbest}")
    min_steps, max_steps = _step_limits(
        model, enc, wav_lens, min_decode_ratio, max_decode_ratio, max_len, speechbrain_compat
    )
    use_static, use_graph = _resolve_path(model, enc, static, cuda_graph)
    if use_static:
        res = _static_search(
            model,
            enc,
            wav_lens,
            beam_size,
            min_steps,
            max_steps,
            greedy=False,
            cuda_graph=use_graph,
            cuda_graph_explicit=bool(cuda_graph),
            length_normalization=length_normalization,
            eos_threshold=eos_threshold,
            temperature=temperature,
            length_penalty=length_penalty,
        )
        if res is not None:
            runner, t_run = res
            return runner.beam_results(t_run, max_steps, nbest, speechbrain_compat)
    finished = _beam_dynamic(
        model,
        enc,
        wav_lens,
        beam_size,
        min_steps,
        max_steps,
        length_normalization,
        eos_threshold,
        temperature,
        length_penalty,
    )
    return _top_hypotheses(finished, nbest, speechbrain_compat)


def _beam_dynamic(
    model: Seq2Seq,
    enc: Tensor,
    wav_lens: Tensor,
    k: int,
    min_steps: list[int],
    max_steps: list[int],
    length_normalization: bool,
    eos_threshold: float | None,
    temperature: float,
    length_penalty: float | None = None,
) -> _Finished:
    """The dynamic beam loop over live rows N = n_a * k (n_a live utterances); returns the finished lists.

    Per step: scores = sum_scores[:, None] + log p [N, V] (/ (t + 1) with length normalisation), top k over the k x V
    candidates of each utterance (candidate c: token c % V, predecessor row c // V + j * k), sum_scores = top
    (x (t + 1)), then hypotheses ending here are stored (:func:`_store_finished`), rows that chose EOS get -inf, and
    done utterances are dropped (:func:`_surviving`).
    """
    b, v, eos = enc.shape[0], model.vocab_size, model.eos_index
    dev = enc.device
    state = model.init_state(enc, wav_lens, group=k)
    active = list(range(b))  # original index of each row group
    sum_scores = torch.full((b * k,), float("-inf"), device=dev)
    sum_scores[::k] = 0.0
    inp = torch.full((b * k,), model.bos_index, dtype=torch.long, device=dev)
    seq = torch.empty(b * k, 0, dtype=torch.long, device=dev)
    offsets = torch.arange(b, device=dev)[:, None] * k
    finished: _Finished = [[] for _ in range(b)]
    t = 0
    while active:
        n_a = len(active)
        log_probs, state = model.step(inp, state, temperature=temperature)
        log_probs = _block_eos_before_min(log_probs, eos, t, [min_steps[i] for i in active], k)
        if eos_threshold is not None:
            allowed = log_probs[:, eos] > eos_threshold * log_probs.max(dim=-1).values
            log_probs[:, eos] = log_probs[:, eos].masked_fill(~allowed, MINUS_INF)
        if length_penalty is not None:  # the authors' per-step scaling replaces the normalisation
            log_probs = log_probs / ((5.0 + t + 1) / 6.0) ** length_penalty
        norm = length_normalization and length_penalty is None
        scores = sum_scores[:, None] + log_probs
        if norm:
            scores = scores / (t + 1)
        top, cand = scores.view(n_a, k * v).topk(k, dim=-1)  # [n_a, K]
        tokens = (cand % v).view(-1)
        pred = (torch.div(cand, v, rounding_mode="floor") + offsets[:n_a]).view(-1)
        sum_scores = (top * (t + 1) if norm else top).view(-1)
        state = model.reorder_state(state, pred, same_items=True)
        seq = torch.cat([seq.index_select(0, pred), tokens[:, None]], dim=1)
        is_eos = tokens == eos
        t += 1
        _store_finished(finished, seq, top, is_eos, active, k, t, max_steps)
        sum_scores = sum_scores.masked_fill(is_eos, float("-inf"))
        inp = tokens

        keep = _surviving(active, finished, k, t, max_steps)
        if keep is None:
            continue
        active = [active[j] for j in keep]
        if active:
            idx = (torch.tensor(keep, device=dev)[:, None] * k + torch.arange(k, device=dev)).view(-1)
            state = model.reorder_state(state, idx)
            seq, sum_scores, inp = (
                seq.index_select(0, idx),
                sum_scores.index_select(0, idx),
                inp.index_select(0, idx),
            )
    return finished


def _store_finished(
    finished: _Finished,
    seq: Tensor,
    top: Tensor,
    is_eos: Tensor,
    active: list[int],
    k: int,
    t: int,
    max_steps: list[int],
) -> None:
    """Append the hypotheses that leave the beam after step t (seq [N, t], top [n_a, k], is_eos [N]) to ``finished``.

    In SpeechBrain's order: the rows that chose EOS (row order), while their utterance has fewer than k finished; then,
    for utterances at their max length, the rows that did not choose EOS (rank order) fill up to k. Each is stored with
    its ranking score ``top``; the token rows are read back in one transfer.
    """
    eos_rows = is_eos.nonzero().view(-1).tolist()
    at_max = [j for j, i in enumerate(active) if t >= max_steps[i]]
    if not (eos_rows or at_max):
        return
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
        kept = seq.index_select(0, torch.tensor(rows, device=seq.device)).tolist()  # one transfer per event
        for row, (i, score, ended) in zip(kept, recs):
            finished[i].append((row, score, ended))


def _surviving(active: list[int], finished: _Finished, k: int, t: int, max_steps: list[int]) -> list[int] | None:
    """Positions in ``active`` of the utterances still running after t steps; None when none is done.

    An utterance is done with k finished hypotheses or at its max length.
    """
    done = [j for j, i in enumerate(active) if len(finished[i]) >= k or t >= max_steps[i]]
    if not done:
        return None
    done_set = set(done)
    return [j for j in range(len(active)) if j not in done_set]


def _top_hypotheses(finished: _Finished, nbest: int, speechbrain_compat: bool) -> list[list[Hypothesis]]:
    """Per utterance, its top ``nbest`` finished hypotheses by score (the final EOS, or with ``speechbrain_compat``
    the last token of a hypothesis cut at the max length, removed)."""
    results: list[list[Hypothesis]] = []
    for fin in finished:
        scores_i = torch.tensor([s for _, s, _ in fin])
        order = scores_i.topk(min(nbest, len(fin))).indices.tolist()
        hyps = []
        for o in order:
            toks, score, ended = fin[o]
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
