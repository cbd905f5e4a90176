"""SpeechBrain's stock searchers on a :class:`Seq2Seq` (the reference of the decoding tests and benchmarks).

:func:`stock_searcher` builds SpeechBrain's ``S2STransformerBeamSearcher`` / ``S2STransformerGreedySearcher`` over the
model's own decoder and output layer: :class:`StockSearcherAdapter` exposes the ``decode(tgt, encoder_out, enc_len)``
of ``TransformerASR`` (the whole prefix is re-decoded at every step, as the stock searchers expect), and
:class:`_OutputLayer` the ``.w`` linear they read. Same weights as :mod:`.dynamic` / :mod:`.cuda_graph`, so the
hypotheses can be compared one to one (``speechbrain_compat=True`` there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from slukd.models.seq2seq import Seq2Seq

__all__ = ["StockSearcherAdapter", "stock_searcher"]


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
