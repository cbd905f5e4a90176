"""The shape-static decode path: eager on any device, captured once in a CUDA graph and replayed on CUDA.

Selected with ``static=True`` (the default on CUDA, where it runs captured, ``cuda_graph``); it gives the same
hypotheses as the dynamic path of :mod:`.dynamic` (up to float rounding of the attention sums). Preallocated buffers
for all N = B * beam rows and the batch's maximum number of steps T (self-attention cache [L, 2, N, H, T, dh] written
at the step position, attention masked to positions <= step, the step itself a device tensor), every row computed at
every step, and only the token / predecessor / score of each row recorded per step. The finished lists, the nbest
selection and the token sequences are rebuilt on the host from that history after the loop (finished hypotheses and
items are thus frozen). The host checks whether all items are done every 8 steps on CUDA (one sync), every step
elsewhere. Captured graphs are kept across calls (keyed by model, shapes, dtype, options and autocast state;
:func:`clear_graph_cache` drops them). Under autocast the step is captured with the autocast weight cache off (casts
happen inside the graph).

:func:`_resolve_path` picks the path from the ``static`` / ``cuda_graph`` options; :func:`_static_search` runs a batch
(through the graph cache when captured) and returns the runner whose :meth:`_StaticSearch.greedy_results` /
:meth:`_StaticSearch.beam_results` read the hypotheses back.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from slukd.models.decoding.common import MINUS_INF, Hypothesis
from slukd.models.seq2seq import Seq2Seq

logger = logging.getLogger(__name__)

__all__ = ["clear_graph_cache"]

_GRAPH_CACHE: OrderedDict[tuple, _StaticSearch] = OrderedDict()
_GRAPH_CACHE_SIZE = 4
_CHECK_EVERY_CUDA = 8  # host "all done?" check interval (one sync) on CUDA; every step elsewhere
_capture_failed = False  # an automatic capture failed once: automatic mode stops trying (explicit mode still raises)


def clear_graph_cache() -> None:
    """Drop the captured CUDA graphs (and their static buffers) kept across calls."""
    _GRAPH_CACHE.clear()


def _resolve_path(model: Seq2Seq, enc: Tensor, static: bool | None, cuda_graph: bool | None) -> tuple[bool, bool]:
    """(use the static path, capture it in a CUDA graph) from the options; None = auto (static + graph on CUDA)."""
    if cuda_graph and static is False:
        raise ValueError("cuda_graph=True runs the static path: it cannot be combined with static=False")
    if cuda_graph and not enc.is_cuda:
        raise ValueError(f"cuda_graph=True needs a CUDA encoder output, got enc on {enc.device}")
    if cuda_graph is None:
        cuda_graph = (
            enc.is_cuda
            and static is not False
            and not model.training
            and not _capture_failed
            and hasattr(model, "init_static_cache")  # a duck-typed decoder without the static step stays dynamic
        )
    if static is None:
        static = cuda_graph
    return bool(static), bool(cuda_graph)


def _autocast_state(device: torch.device) -> tuple[bool, torch.dtype | None]:
    if not torch.is_autocast_enabled(device.type):
        return False, None
    return True, torch.get_autocast_dtype(device.type)


class _StaticSearch:
    """Static buffers and one shape-static decode step (beam search, or greedy with ``group=1``) for N = B * group.

    Buffers (fixed addresses): the decoder's :class:`StaticDecoderCache`, input tokens ``inp`` [N], running scores
    ``sum_scores`` [N] (beam), per-row minimum lengths ``min_rows`` [N], the step ``t`` (long [1]) and the history
    ``tok_hist`` / ``score_hist`` [T, N] (greedy: token chosen; beam: candidate index in the item's k x V scores, which
    gives token and predecessor row, and its ranking score at each step). One step (:meth:`step`) runs without host
    sync and data-dependent shapes; hypotheses that end or items that are done keep being computed, and their results
    are read back from the history only up to where they ended (:meth:`beam_results`, :meth:`greedy_results`), so
    they are frozen.
    """

    def __init__(
        self,
        model: Seq2Seq,
        enc: Tensor,
        wav_lens: Tensor,
        group: int,
        t_max: int,
        *,
        greedy: bool,
        length_normalization: bool,
        eos_threshold: float | None,
        temperature: float,
        length_penalty: float | None = None,
    ) -> None:
        dev = enc.device
        self.model_ref = weakref.ref(model)
        self.b, self.k, self.t_max, self.v = enc.shape[0], group, t_max, model.vocab_size
        self.greedy, self.length_normalization = greedy, length_normalization
        self.eos_threshold, self.temperature = eos_threshold, temperature
        self.length_penalty = length_penalty
        self.eos, self.bos = model.eos_index, model.bos_index
        n = self.b * group
        # even: a captured graph runs two steps per replay (the cache's double buffer), possibly one past t_max
        self.t_cap = t_max + t_max % 2
        self.cache = model.init_static_cache(enc, wav_lens, group, self.t_cap)
        self.inp = torch.full((n,), self.bos, dtype=torch.long, device=dev)
        self.sum_scores = torch.zeros(n, device=dev)
        self.t = torch.zeros(1, dtype=torch.long, device=dev)
        self.t1f = torch.ones(1, device=dev)  # float(t + 1), the length normaliser
        self.min_rows = torch.zeros(n, dtype=torch.long, device=dev)
        self.max_rows = torch.zeros(n, dtype=torch.long, device=dev)
        self.max_items = torch.zeros(self.b, dtype=torch.long, device=dev)
        self.n_eos = torch.zeros(self.b, dtype=torch.long, device=dev)
        self.offsets = torch.arange(self.b, device=dev)[:, None] * group  # [B, 1]
        # greedy: token of each row per step; beam: its candidate index in the item's k x V scores (token = cand % V,
        # predecessor row = cand // V + item * k) and its ranking score
        self.tok_hist = torch.zeros(self.t_cap, n, dtype=torch.long, device=dev)
        self.score_hist = None if greedy else torch.zeros(self.t_cap, n, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_per_replay = 1
        self.autocast: tuple[bool, torch.dtype | None] = _autocast_state(dev)

    @property
    def model(self) -> Seq2Seq:
        m = self.model_ref()
        if m is None:  # pragma: no cover - the caller holds the model
            raise RuntimeError("the model of this static decoder was garbage collected")
        return m

    def load(self, enc: Tensor, wav_lens: Tensor, min_steps: list[int], max_steps: list[int]) -> None:
        """Copy a new batch (same shapes) into the buffers and reset the search state (outside any graph)."""
        model = self.model
        self.cache.load(model.init_state(enc, wav_lens, group=self.k))
        dev = self.inp.device
        self.inp.fill_(self.bos)
        if not self.greedy:
            self.sum_scores.fill_(float("-inf"))
            self.sum_scores[:: self.k] = 0.0  # the first step expands beam 0 only
        self.t.zero_()
        self.t1f.fill_(1.0)
        self.n_eos.zero_()
        mins = torch.tensor(min_steps, dtype=torch.long).repeat_interleave(self.k)
        maxs = torch.tensor(max_steps, dtype=torch.long)
        self.min_rows.copy_(mins.to(dev))
        self.max_items.copy_(maxs.to(dev))
        self.max_rows.copy_(maxs.repeat_interleave(self.k).to(dev))

    def step(self) -> None:
        """One decode step at position t (device tensor); updates every buffer in place, then t += 1.

        Beam: scores = sum_scores[:, None] + log p (divided by t + 1 with length normalisation), top k over k x V per
        item (candidate c: token c % V, predecessor row c // V + item * k), cache rows reordered, sum_scores = top
        (x (t + 1)) and -inf on rows that chose EOS. Greedy: argmax. EOS is blocked (-1e20) on rows with t < min
        length. Written for few kernels (results go straight into their buffers).
        """
        t, eos = self.t, self.eos
        lp = self.model.static_step(self.inp, t, self.cache, temperature=self.temperature)  # [N, V] float32
        lp_eos = lp[:, eos]
        lp_eos.masked_fill_(t < self.min_rows, MINUS_INF)
        if self.eos_threshold is not None:
            allowed = lp_eos > self.eos_threshold * lp.max(dim=-1).values
            lp_eos.masked_fill_(~allowed, MINUS_INF)
        if self.greedy:
            torch.argmax(lp, dim=-1, out=self.inp)
            self.tok_hist.index_copy_(0, t, self.inp[None])
            t.add_(1)
            return
        b, k, v = self.b, self.k, self.v
        if self.length_penalty is not None:  # step t + 1 scaled by ((5 + t + 1) / 6) ** alpha (no normalisation)
            lp.div_(((self.t1f + 5.0) / 6.0).pow_(self.length_penalty))
        scores = lp.add_(self.sum_scores[:, None])
        if self.length_normalization and self.length_penalty is None:
            scores.div_(self.t1f)
        top, cand = scores.view(b, k * v).topk(k, dim=-1)  # [B, K]
        torch.remainder(cand, v, out=self.inp.view(b, k))  # the tokens
        pred = torch.div(cand, v, rounding_mode="floor").add_(self.offsets).view(-1)
        self.cache.reorder_(pred)
        self.tok_hist.index_copy_(0, t, cand.view(1, -1))
        self.score_hist.index_copy_(0, t, top.view(1, -1))
        if self.length_normalization and self.length_penalty is None:
            torch.mul(top.view(-1), self.t1f, out=self.sum_scores)
        else:
            self.sum_scores.copy_(top.view(-1))
        self.sum_scores.masked_fill_(self.inp == eos, float("-inf"))
        t.add_(1)
        self.t1f.add_(1.0)

    def _autocast_ctx(self):
        enabled, dtype = self.autocast
        if not enabled:
            return contextlib.nullcontext()
        # the autocast weight cache must be off while capturing (its casts would be freed after the capture)
        return torch.autocast(self.inp.device.type, dtype=dtype, cache_enabled=False)

    def capture(self, warmup: int = 3) -> None:
        """Warm up on a side stream, capture two :meth:`step` in a CUDA graph (the state must be reloaded after this).

        Two steps per replay: each beam step swaps the cache's two K/V buffers, so a replay must swap them back. The
        warm-up runs an even number of steps (the same buffer is current at capture time as after a reload's
        sequence of replays), never past the last cache position.
        """
        side = torch.cuda.Stream(device=self.inp.device)
        side.wait_stream(torch.cuda.current_stream(self.inp.device))
        with torch.cuda.stream(side), self._autocast_ctx():
            for _ in range(min(warmup - warmup % 2, self.t_cap)):
                self.step()
        torch.cuda.current_stream(self.inp.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (e.g. a DataLoader's pin-memory thread) may keep using CUDA during the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), self._autocast_ctx():
            self.step()
            self.step()
        self.graph = graph
        self.steps_per_replay = 2

    def _all_done(self, t0: int, t1: int) -> bool:
        """Count the EOS chosen at steps [t0, t1) (before each item's max length); True when every item is done.

        Beam: an item is done with k EOS hypotheses or at its max length; greedy: at its first EOS or max length.
        """
        tok = self.tok_hist[t0:t1] if self.greedy else self.tok_hist[t0:t1] % self.v
        hit = (tok == self.eos) & (torch.arange(t0, t1, device=self.t.device)[:, None] < self.max_rows[None, :])
        self.n_eos += hit.view(t1 - t0, self.b, self.k).sum(dim=(0, 2))
        done = (self.n_eos >= self.k) | (self.max_items <= t1)
        return bool(done.all())

    def run(self, n_steps: int) -> int:
        """Run up to n_steps steps (graph replays when captured); returns the number of steps run.

        A captured graph runs ``steps_per_replay`` (2) steps per replay, so one more than n_steps may run (the buffers
        have room for it); the results only read each item's steps up to its own maximum length.
        """
        every = _CHECK_EVERY_CUDA if self.inp.is_cuda else 1
        per = self.steps_per_replay if self.graph is not None else 1
        t_run = last = 0
        while t_run < n_steps:
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()
            t_run += per
            if t_run < n_steps and t_run % every == 0:
                if self._all_done(last, t_run):
                    break
                last = t_run
        return t_run

    def greedy_results(self, t_run: int, max_steps: list[int]) -> list[list[int]]:
        """Per item: tokens before its first EOS (within its max length), else its first max_steps tokens."""
        tok = self.tok_hist[:t_run].cpu().numpy()  # [T, B]
        out = []
        for i, m in enumerate(max_steps):
            col = tok[:m, i]
            ends = np.flatnonzero(col == self.eos)
            out.append(col[: ends[0] if ends.size else m].tolist())
        return out

    def beam_results(
        self, t_run: int, max_steps: list[int], nbest: int, speechbrain_compat: bool
    ) -> list[list[Hypothesis]]:
        """Rebuild the finished lists of the dynamic path from the history, then the top ``nbest`` per item.

        Item i's finished hypotheses, in insertion order: the first k EOS candidates in (step, beam rank) order before
        its max length m_i; if fewer than k, the non-EOS candidates of step m_i - 1 in rank order fill up to k. Each
        is (end step, row, ended) with the score it was ranked with; tokens come from following the predecessors back.
        """
        cand = self.tok_hist[:t_run].cpu().numpy()  # [T, N]
        score = self.score_hist[:t_run].cpu().numpy()
        k = self.k
        tok = cand % self.v
        pred = cand // self.v + (np.arange(cand.shape[1]) // k * k)[None, :]
        chosen: list[list[tuple[int, int, bool, float]]] = []
        for i, m in enumerate(max_steps):
            rows = slice(i * k, (i + 1) * k)
            is_eos = tok[:m, rows] == self.eos  # [m, k]
            ts, ks = np.nonzero(is_eos)  # row-major: step, then beam rank
            fin = [(int(s), i * k + int(r), True) for s, r in zip(ts[:k], ks[:k])]
            if len(fin) < k:
                last = m - 1
                for r in range(k):
                    if len(fin) >= k:
                        break
                    if not is_eos[last, r]:
                        fin.append((last, i * k + r, False))
            scores_i = torch.tensor([float(score[s, r]) for s, r, _ in fin])
            order = scores_i.topk(min(nbest, len(fin))).indices.tolist()
            chosen.append([(*fin[o], float(scores_i[o])) for o in order])
        # follow the predecessors back from every chosen end (all hypotheses at once)
        flat = [h for hyps in chosen for h in hyps]
        ends = np.array([s for s, _, _, _ in flat], dtype=np.int64)
        cur = np.array([r for _, r, _, _ in flat], dtype=np.int64)
        seqs = np.zeros((len(flat), int(ends.max()) + 1 if flat else 0), dtype=np.int64)
        for s in range(seqs.shape[1] - 1, -1, -1):
            act = ends >= s
            seqs[act, s] = tok[s, cur[act]]
            cur[act] = pred[s, cur[act]]
        results: list[list[Hypothesis]] = []
        j = 0
        for hyps in chosen:
            res = []
            for s, _, ended, sc in hyps:
                toks = seqs[j, : s + 1].tolist()
                j += 1
                if ended or speechbrain_compat:
                    toks = toks[:-1]
                res.append(Hypothesis(tokens=toks, score=sc, finished=ended))
            results.append(res)
        return results


def _graph_key(model: Seq2Seq, enc: Tensor, group: int, t_max: int, greedy: bool, opts: tuple) -> tuple:
    params = tuple(p.data_ptr() for p in model.parameters()) + tuple(b.data_ptr() for b in model.buffers())
    return (
        id(model),
        model.training,
        params,
        str(enc.device),
        tuple(enc.shape),
        enc.dtype,
        group,
        t_max,
        greedy,
        opts,
        _autocast_state(enc.device),
    )


@torch.no_grad()
def _static_search(
    model: Seq2Seq,
    enc: Tensor,
    wav_lens: Tensor,
    group: int,
    min_steps: list[int],
    max_steps: list[int],
    *,
    greedy: bool,
    cuda_graph: bool,
    cuda_graph_explicit: bool,
    length_normalization: bool = True,
    eos_threshold: float | None = None,
    temperature: float = 1.0,
    length_penalty: float | None = None,
) -> tuple[_StaticSearch, int] | None:
    """Run the static search (captured or eager); None when an automatic graph capture failed (caller falls back)."""
    global _capture_failed
    t_max = max(max_steps)
    kw = dict(
        greedy=greedy,
        length_normalization=length_normalization,
        eos_threshold=eos_threshold,
        temperature=temperature,
        length_penalty=length_penalty,
    )
    runner = None
    if cuda_graph:
        key = _graph_key(
            model, enc, group, t_max, greedy, (length_normalization, eos_threshold, temperature, length_penalty)
        )
        runner = _GRAPH_CACHE.get(key)
        if runner is not None and runner.model_ref() is model:
            _GRAPH_CACHE.move_to_end(key)
        else:
            runner = _StaticSearch(model, enc, wav_lens, group, t_max, **kw)
            runner.load(enc, wav_lens, min_steps, max_steps)
            try:
                runner.capture()
            except Exception as err:  # noqa: BLE001 - any capture failure: report, then fall back or raise
                if cuda_graph_explicit:
                    raise RuntimeError(f"CUDA graph capture of the decode step failed: {err}") from err
                logger.warning("CUDA graph capture failed (%s); using the dynamic decoding path from now on", err)
                _capture_failed = True
                return None
            _GRAPH_CACHE[key] = runner
            while len(_GRAPH_CACHE) > _GRAPH_CACHE_SIZE:
                _GRAPH_CACHE.popitem(last=False)
    else:
        runner = _StaticSearch(model, enc, wav_lens, group, t_max, **kw)
    runner.load(enc, wav_lens, min_steps, max_steps)
    return runner, runner.run(t_max)
