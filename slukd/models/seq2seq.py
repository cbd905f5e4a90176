"""The shared speech/audio encoder-decoder (SLU and captioning), built from SpeechBrain lobes.

Pipeline (shapes for a batch of B waveforms of S samples, relative lengths ``wav_lens`` in (0, 1]):

    wavs [B, S] --FbankFeatures--> feats [B, T, n_mels]   (log-mel, per-utterance mean/var normalised)
          --AudioEncoder--> enc [B, T', D]                  (default: CNN front end (4x time downsampling) +
                                                            SpeechBrain Conformer/Transformer encoder)
          --TransformerDecoder (teacher forcing)--> logits [B, L, V]
    enc --ctc_lin + log_softmax--> CTC log-probs [B, T', V]

Lengths follow SpeechBrain's convention everywhere: a relative length ``r`` of a padded axis of size ``T`` covers the
first ``round(r * T)`` positions; padded positions are masked in attention (keys), zeroed between convolutions,
and never change the outputs of real positions.

The decoder is a pre-norm SpeechBrain ``TransformerDecoder``; :meth:`Seq2Seq.init_state`, :meth:`Seq2Seq.step` and
:meth:`Seq2Seq.reorder_state` run it incrementally (cached self-attention keys/values, cross-attention keys/values of
the encoder computed once), with the very same weights, for ``slukd.models.decoding``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.transformer.Transformer import (
    NormalizedEmbedding,
    PositionalEncoding,
    TransformerDecoder,
    get_lookahead_mask,
)
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "AudioEncoder",
    "CNNFrontEnd",
    "DecoderState",
    "FbankFeatures",
    "Seq2Seq",
    "Seq2SeqOutput",
    "SpeechBrainEncoder",
    "StaticDecoderCache",
    "count_parameters",
    "length_mask",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def length_mask(rel_lens: Tensor, size: int) -> Tensor:
    """Valid-position mask [B, size] (True = real) for relative lengths: position t < round(rel * size)."""
    abs_lens = torch.round(rel_lens.float() * size).long()
    return torch.arange(size, device=rel_lens.device)[None, :] < abs_lens[:, None]


def _check_lens(x: Tensor, rel_lens: Tensor, what: str) -> None:
    if rel_lens.dim() != 1 or rel_lens.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: wav_lens must have shape [{x.shape[0]}], got {tuple(rel_lens.shape)}")
    if bool(((rel_lens <= 0) | (rel_lens > 1.0 + 1e-6)).any()):
        raise ValueError(f"{what}: wav_lens must be relative lengths in (0, 1], got {rel_lens.tolist()}")


# ----------------------------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------------------------
class FbankFeatures(nn.Module):
    """SpeechBrain log-mel filterbanks, normalised per utterance over its valid frames.

    ``x_norm[b, t] = (x[b, t] - mean_b) / sqrt(var_b + 1e-5)`` with mean/var over the first
    ``round(rel_b * T)`` frames of utterance b; padded samples are zeroed first (as the STFT's own zero padding of
    an unpadded utterance) and padded frames are set to 0. Always computed in float32 (also under
    autocast). Output [B, T, n_mels] with ``T = 1 + S // hop``.
    """

    def __init__(
        self,
        n_mels: int = 40,
        sample_rate: int = 16000,
        win_length_ms: float = 25.0,
        hop_length_ms: float = 10.0,
        n_fft: int | None = None,
    ) -> None:
        super().__init__()
        win = int(round(sample_rate * win_length_ms / 1000.0))
        n_fft = n_fft or win
        if n_fft < win:
            raise ValueError(f"n_fft={n_fft} is shorter than the window ({win} samples)")
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.hop_length = int(round(sample_rate * hop_length_ms / 1000.0))
        self.fbank = Fbank(
            sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, win_length=win_length_ms, hop_length=hop_length_ms
        )

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        if wavs.dim() != 2:
            raise ValueError(f"FbankFeatures: wavs must be [B, S], got shape {tuple(wavs.shape)}")
        _check_lens(wavs, wav_lens, "FbankFeatures")
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            wavs = wavs.float() * length_mask(wav_lens, wavs.shape[1])  # samples past the end count as silence
            feats = self.fbank(wavs)
            keep = length_mask(wav_lens, feats.shape[1]).unsqueeze(-1).to(feats.dtype)  # [B, T, 1]
            n = keep.sum(dim=1, keepdim=True).clamp(min=1.0) * feats.shape[2]
            mean = (feats * keep).sum(dim=(1, 2), keepdim=True) / n
            var = (((feats - mean) * keep) ** 2).sum(dim=(1, 2), keepdim=True) / n
            return (feats - mean) / torch.sqrt(var + 1e-5) * keep


# ----------------------------------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------------------------------
class AudioEncoder(nn.Module):
    """Encoder contract: ``forward(feats [B, T, F], rel_lens [B]) -> enc [B, T', out_dim]``.

    ``rel_lens`` are relative lengths (SpeechBrain style); the output keeps them (item b is valid on its first
    ``round(rel_b * T')`` frames) and padded input frames must not change the outputs of valid frames. Subclasses set
    ``out_dim``.
    """

    out_dim: int

    def forward(self, feats: Tensor, rel_lens: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class CNNFrontEnd(nn.Module):
    """Small 2-D CNN: per block Conv2d(3x3, stride 2 in time and frequency, pad 1) -> LayerNorm(C, F') -> GELU.

    [B, T, F] -> [B, T_n, C_last * F_n] with ``T_{i+1} = ceil(T_i / 2)`` (4x fewer frames with two blocks).
    Padded frames are zeroed before each convolution so that they never leak into valid frames.
    """

    def __init__(self, n_feats: int, channels: Sequence[int] = (16, 16)) -> None:
        super().__init__()
        if not channels:
            raise ValueError("CNNFrontEnd needs at least one block (channels=())")
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in, f = 1, n_feats
        for c in channels:
            self.convs.append(nn.Conv2d(c_in, c, kernel_size=3, stride=2, padding=1))
            f = (f + 1) // 2
            self.norms.append(nn.LayerNorm([c, f]))
            c_in = c
        self.out_dim = c_in * f
        self.downsampling = 2 ** len(channels)

    def forward(self, feats: Tensor, rel_lens: Tensor) -> Tensor:
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        for conv, norm in zip(self.convs, self.norms):
            keep = length_mask(rel_lens, x.shape[2])[:, None, :, None]
            x = conv(x.masked_fill(~keep, 0.0))  # [B, C, T', F']
            x = F.gelu(norm(x.transpose(1, 2)).transpose(1, 2))
        b, c, t, f = x.shape
        return x.permute(0, 2, 1, 3).reshape(b, t, c * f)


class SpeechBrainEncoder(AudioEncoder):
    """CNN front end + SpeechBrain ``TransformerASR`` encoder (Conformer with RelPosMHAXL, or Transformer).

    feats [B, T, F] -> CNNFrontEnd -> Linear to d_model -> encoder layers -> enc [B, ceil(T/4), d_model].
    SpeechBrain's Conformer convolution module does not mask its input; a forward pre-hook zeroes padded frames
    before each depthwise convolution so that padding never changes valid frames.
    """

    def __init__(
        self,
        n_feats: int,
        *,
        d_model: int = 144,
        nhead: int = 4,
        num_layers: int = 4,
        d_ffn: int = 576,
        encoder_type: str = "conformer",
        cnn_channels: Sequence[int] = (16, 16),
        dropout: float = 0.1,
        conformer_kernel_size: int = 15,
    ) -> None:
        super().__init__()
        if encoder_type not in ("conformer", "transformer"):
            raise ValueError(f"encoder_type must be 'conformer' or 'transformer', got {encoder_type!r}")
        self.front = CNNFrontEnd(n_feats, cnn_channels) if cnn_channels else None
        in_dim = self.front.out_dim if self.front is not None else n_feats
        self.transformer = TransformerASR(
            tgt_vocab=1,
            input_size=in_dim,
            d_model=d_model,
            nhead=nhead,
            num_encoder_layers=num_layers,
            num_decoder_layers=0,
            d_ffn=d_ffn,
            dropout=dropout,
            activation=nn.GELU,
            encoder_module=encoder_type,
            attention_type="RelPosMHAXL" if encoder_type == "conformer" else "regularMHA",
            normalize_before=True,
            kernel_size=conformer_kernel_size,
            causal=False,
        )
        self.out_dim = d_model
        self._pad: Tensor | None = None  # [B, 1, T'] True = padded, set during forward for the conv hooks
        if encoder_type == "conformer":
            for layer in self.transformer.encoder.layers:
                layer.convolution_module.conv.register_forward_pre_hook(self._mask_conv_input)

    def _mask_conv_input(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._pad is None or args[0].dim() != 3 or args[0].shape[-1] != self._pad.shape[-1]:
            return None
        return (args[0].masked_fill(self._pad, 0.0),) + tuple(args[1:])

    def forward(self, feats: Tensor, rel_lens: Tensor) -> Tensor:
        x = self.front(feats, rel_lens) if self.front is not None else feats
        self._pad = ~length_mask(rel_lens, x.shape[1]).unsqueeze(1)
        try:
            return self.transformer.encode(x, rel_lens)
        finally:
            self._pad = None


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------
_STATIC_ALIGN = 16  # static cache lengths (steps, encoder frames) are rounded up to a multiple of this


def _mask_as(mask: Tensor, q: Tensor) -> Tensor:
    """An additive float mask in the query's dtype (SDPA needs it; a no-op when it matches); bool masks unchanged."""
    return mask if mask.dtype == torch.bool else mask.to(q.dtype)


@dataclass
class Seq2SeqOutput:
    """enc [B, T', D]; logits [B, L, V] (teacher forced); ctc_log_probs [B, T', V] or None."""

    enc: Tensor
    logits: Tensor
    ctc_log_probs: Tensor | None


@dataclass
class DecoderState:
    """Incremental decoder state for N = n_items * group rows (rows of one item are consecutive).

    self_k / self_v: per decoder layer [N, H, t, dh] (keys/values of the t tokens consumed so far);
    cross_k / cross_v: per layer [n_items, H, S, dh] (encoder keys/values, computed once);
    cross_keep: [n_items, 1, 1, S] bool, True on valid encoder frames; group: rows per item; step: t.
    """

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    cross_keep: Tensor
    group: int
    step: int

    @property
    def num_rows(self) -> int:
        return self.cross_keep.shape[0] * self.group


@dataclass
class StaticDecoderCache:
    """Preallocated (fixed-address) incremental decoder state for N = n_items * group rows and at most T steps.

    kv: [L, 2, N, H, T, dh] self-attention keys (index 0) / values (1) of every decoder layer, position t written at
    step t (positions not yet written are zeros and masked out); T is the requested number of steps rounded up to a
    multiple of 16 (aligned attention masks); cross_k / cross_v: per layer [n_items, H, S, dh] (encoder frames S, also
    rounded up to a multiple of 16, padding zeros and masked out); cross_keep: [n_items, 1, 1, S'] bool (S' the
    state's frames); positions: arange(T). Used by :meth:`Seq2Seq.static_step` for shape-static decoding (CUDA graphs):
    nothing is ever reallocated, new inputs are copied in with :meth:`load`.

    Precomputed additive masks (0 = attend, -inf = masked), so the step builds no mask: ``self_bias`` [T, T] (row t:
    positions <= t) and ``cross_bias`` [n_items, 1, 1, S]; ``pe`` [T, E] the positional encodings (zeros past the
    model's maximum length). ``kv_spare`` is a second buffer like ``kv``: :meth:`reorder_` gathers into it and swaps
    the two (one pass instead of gather + copy back). Hence a CUDA graph must capture an even number of reorders, so
    that replays start from the buffer they were captured with.
    """

    kv: Tensor
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    cross_keep: Tensor
    positions: Tensor
    group: int
    kv_spare: Tensor | None = None
    self_bias: Tensor | None = None
    cross_bias: Tensor | None = None
    pe: Tensor | None = None

    @property
    def num_rows(self) -> int:
        return self.kv.shape[2]

    @property
    def max_steps(self) -> int:
        return self.kv.shape[4]

    def load(self, state: DecoderState) -> None:
        """Copy the encoder keys/values of a fresh :class:`DecoderState` (same shapes) in and clear the self cache."""
        if state.cross_keep.shape != self.cross_keep.shape or state.group != self.group:
            raise ValueError(
                f"StaticDecoderCache.load: state for {tuple(state.cross_keep.shape)} x group {state.group}, "
                f"cache built for {tuple(self.cross_keep.shape)} x group {self.group}"
            )
        s = state.cross_keep.shape[-1]
        for dst, src in zip(self.cross_k + self.cross_v, state.cross_k + state.cross_v):
            dst[:, :, :s].copy_(src)
        self.cross_keep.copy_(state.cross_keep)
        if self.cross_bias is not None:
            self.cross_bias.fill_(float("-inf"))
            self.cross_bias[..., :s].masked_fill_(state.cross_keep, 0.0)
        self.kv.zero_()

    def reorder_(self, index: Tensor) -> None:
        """Row r of the self cache becomes old row index[r] (beam predecessors of the same items).

        With ``kv_spare``: gathered into the spare buffer, then ``kv`` and ``kv_spare`` are swapped (the attribute
        ``kv`` names the other tensor afterwards). One gather over all layers on CUDA; per [N, H, T, dh] slab elsewhere
        (index_select along a middle dimension is slow on CPU).
        """
        if self.kv_spare is None:
            if self.kv.is_cuda:
                self.kv.copy_(self.kv.index_select(2, index))
            else:
                for slab in self.kv.flatten(0, 1):
                    slab.copy_(slab.index_select(0, index))
            return
        if self.kv.is_cuda:
            torch.index_select(self.kv, 2, index, out=self.kv_spare)
        else:
            for src, dst in zip(self.kv.flatten(0, 1), self.kv_spare.flatten(0, 1)):
                torch.index_select(src, 0, index, out=dst)
        self.kv, self.kv_spare = self.kv_spare, self.kv


class Seq2Seq(nn.Module):
    """Encoder-decoder with a CTC head; see the module docstring for the data flow and length conventions."""

    def __init__(
        self,
        vocab_size: int,
        *,
        encoder: AudioEncoder | None = None,
        features: nn.Module | None = None,
        n_mels: int = 40,
        win_length_ms: float = 25.0,
        hop_length_ms: float = 10.0,
        d_model: int = 144,
        nhead: int = 4,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 2,
        d_ffn: int = 576,
        encoder_type: str = "conformer",
        cnn_channels: Sequence[int] = (16, 16),
        dropout: float = 0.1,
        ctc: bool = True,
        pad_index: int = 0,
        bos_index: int = 1,
        eos_index: int = 2,
        sample_rate: int = 16000,
        max_target_len: int = 2500,
    ) -> None:
        super().__init__()
        if vocab_size <= max(pad_index, bos_index, eos_index):
            raise ValueError(f"vocab_size={vocab_size} too small for pad/bos/eos {pad_index}/{bos_index}/{eos_index}")
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} is not divisible by nhead={nhead}")
        self.vocab_size = vocab_size
        self.pad_index, self.bos_index, self.eos_index = pad_index, bos_index, eos_index
        self.d_model, self.nhead = d_model, nhead
        self.features = (
            features if features is not None else FbankFeatures(n_mels, sample_rate, win_length_ms, hop_length_ms)
        )
        n_feats = getattr(self.features, "n_mels", n_mels)
        if encoder is None:
            encoder = SpeechBrainEncoder(
                n_feats,
                d_model=d_model,
                nhead=nhead,
                num_layers=num_encoder_layers,
                d_ffn=d_ffn,
                encoder_type=encoder_type,
                cnn_channels=cnn_channels,
                dropout=dropout,
            )
        if not hasattr(encoder, "out_dim"):
            raise TypeError("encoder must define out_dim (see slukd.models.seq2seq.AudioEncoder)")
        self.encoder = encoder
        self.encoder_dim: int = int(encoder.out_dim)
        self.enc_proj = nn.Identity() if self.encoder_dim == d_model else nn.Linear(self.encoder_dim, d_model)
        self.tgt_embedding = NormalizedEmbedding(d_model, vocab_size)
        self.positional_encoding = PositionalEncoding(d_model, max_target_len)
        self.decoder = TransformerDecoder(
            num_layers=num_decoder_layers,
            nhead=nhead,
            d_ffn=d_ffn,
            d_model=d_model,
            dropout=dropout,
            activation=nn.GELU,
            normalize_before=True,
            causal=True,
        )
        self.out_lin = nn.Linear(d_model, vocab_size)
        self.ctc_lin = nn.Linear(self.encoder_dim, vocab_size) if ctc else None

    # -- encoder ---------------------------------------------------------------------------------------------------
    def compute_features(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """wavs [B, S] -> normalised features [B, T, n_mels]."""
        return self.features(wavs, wav_lens)

    def encode_features(self, feats: Tensor, wav_lens: Tensor) -> Tensor:
        """feats [B, T, F] -> enc [B, T', encoder_dim]."""
        _check_lens(feats, wav_lens, "Seq2Seq.encode_features")
        return self.encoder(feats, wav_lens)

    def encode(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """wavs [B, S] -> enc [B, T', encoder_dim]."""
        return self.encode_features(self.compute_features(wavs, wav_lens), wav_lens)

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        """enc [B, T', D] -> log_softmax(ctc_lin(enc)) [B, T', V] in float32."""
        if self.ctc_lin is None:
            raise RuntimeError("this Seq2Seq was built with ctc=False: no CTC head")
        return torch.log_softmax(self.ctc_lin(enc).float(), dim=-1)

    # -- teacher-forced decoder ------------------------------------------------------------------------------------
    def _embed(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens [B, L] -> emb * sqrt(d_model) + sinusoid positions start..start+L-1: [B, L, d_model]."""
        x = self.tgt_embedding(tokens)
        pe = self.positional_encoding.pe[:, start : start + tokens.shape[1]]
        return x + pe.to(x.dtype)

    def _memory(self, enc: Tensor) -> Tensor:
        """Encoder output projected to d_model; cast to the decoder's dtype outside autocast (e.g. a bf16 enc)."""
        mem = self.enc_proj(enc)
        if not torch.is_autocast_enabled(mem.device.type):
            mem = mem.to(self.out_lin.weight.dtype)
        return mem

    def decoder_hidden(self, enc: Tensor, enc_lens: Tensor | None, tokens: Tensor) -> Tensor:
        """Full-prefix decoder pass: final-norm hidden states [B, L, d_model].

        enc_lens: absolute valid encoder frames [B] (None = all valid). Self-attention is causal (pad tokens only ever
        follow real tokens, so the causal mask already hides them from real positions); encoder padding is masked.
        """
        mem = self._memory(enc)
        mem_pad = None
        if enc_lens is not None:
            mem_pad = torch.arange(mem.shape[1], device=mem.device)[None, :] >= enc_lens.to(mem.device)[:, None]
            mem_pad[:, 0] = False  # an utterance shorter than one encoder frame still attends to its first frame
        hidden, _, _ = self.decoder(
            self._embed(tokens.long()),
            mem,
            tgt_mask=get_lookahead_mask(tokens),
            memory_key_padding_mask=mem_pad,
        )
        return hidden

    def decode(self, enc: Tensor, wav_lens: Tensor, tokens_bos: Tensor) -> Tensor:
        """Teacher-forced decoder logits [B, L, V] for inputs tokens_bos [B, L] (bos + target, padded)."""
        _check_lens(enc, wav_lens, "Seq2Seq.decode")
        enc_lens = torch.round(enc.shape[1] * wav_lens.float()).long()
        return self.out_lin(self.decoder_hidden(enc, enc_lens, tokens_bos))

    def forward(self, wavs: Tensor, wav_lens: Tensor, tokens_bos: Tensor) -> Seq2SeqOutput:
        enc = self.encode(wavs, wav_lens)
        logits = self.decode(enc, wav_lens, tokens_bos)
        ctc = self.ctc_log_probs(enc) if self.ctc_lin is not None else None
        return Seq2SeqOutput(enc=enc, logits=logits, ctc_log_probs=ctc)

    # -- incremental decoding --------------------------------------------------------------------------------------
    def _split_heads(self, x: Tensor) -> Tensor:
        """[..., L, E] -> [..., H, L, dh]."""
        *lead, length, _ = x.shape
        return x.reshape(*lead, length, self.nhead, -1).transpose(-3, -2)

    def init_state(self, enc: Tensor, wav_lens: Tensor, group: int = 1) -> DecoderState:
        """Start decoding: encoder keys/values of every decoder layer are computed once.

        enc [B, T', D], wav_lens [B]; ``group`` rows per item (the beam size), so the state has N = B * group rows.
        """
        _check_lens(enc, wav_lens, "Seq2Seq.init_state")
        mem = self._memory(enc)
        keep = length_mask(wav_lens, mem.shape[1])
        keep[:, 0] = True  # as in decoder_hidden
        keep = keep[:, None, None, :]
        cross_k, cross_v = [], []
        for layer in self.decoder.layers:
            mha = layer.multihead_attn.att
            e = self.d_model
            w, b = mha.in_proj_weight, mha.in_proj_bias
            k = F.linear(mem, w[e : 2 * e], None if b is None else b[e : 2 * e])
            v = F.linear(mem, w[2 * e :], None if b is None else b[2 * e :])
            cross_k.append(self._split_heads(k))
            cross_v.append(self._split_heads(v))
        n, dh = enc.shape[0] * group, self.d_model // self.nhead
        empty = mem.new_zeros(n, self.nhead, 0, dh)
        n_layers = len(self.decoder.layers)
        return DecoderState(
            self_k=[empty] * n_layers,
            self_v=[empty] * n_layers,
            cross_k=cross_k,
            cross_v=cross_v,
            cross_keep=keep,
            group=group,
            step=0,
        )

    def step_hidden(self, tokens_last: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One incremental step: tokens_last [N] (token at position state.step) -> hidden [N, d_model], new state.

        Pre-norm layer: x += SelfAttn(LN1 x | cached K/V); x += CrossAttn(LN2 x, enc K/V); x += FFN(LN3 x);
        then the final LayerNorm. Equal (up to float rounding) to row ``step`` of :meth:`decoder_hidden`.
        """
        n, g, e = tokens_last.shape[0], state.group, self.d_model
        if n != state.num_rows:
            raise ValueError(f"step: got {n} tokens for a state of {state.num_rows} rows")
        x = self._embed(tokens_last.long().view(n, 1), start=state.step).view(n, e)
        new_k, new_v = [], []
        for i, layer in enumerate(self.decoder.layers):
            sa = layer.self_attn.att
            qkv = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias)  # [N, 3E]
            q, k, v = (self._split_heads(t.unsqueeze(1)) for t in qkv.split(e, dim=-1))  # [N, H, 1, dh]
            k_all = torch.cat([state.self_k[i], k.to(state.self_k[i].dtype)], dim=2)
            v_all = torch.cat([state.self_v[i], v.to(state.self_v[i].dtype)], dim=2)
            new_k.append(k_all)
            new_v.append(v_all)
            a = F.scaled_dot_product_attention(q, k_all.to(q.dtype), v_all.to(q.dtype))  # [N, H, 1, dh]
            x = x + layer.dropout1(sa.out_proj(a.reshape(n, e)))

            ca = layer.multihead_attn.att
            q = F.linear(
                layer.norm2(x), ca.in_proj_weight[:e], None if ca.in_proj_bias is None else ca.in_proj_bias[:e]
            )
            q = q.view(n // g, g, self.nhead, -1).transpose(1, 2)  # [B, H, G, dh]: the group's rows share K/V
            ck, cv = state.cross_k[i], state.cross_v[i]
            a = F.scaled_dot_product_attention(q, ck.to(q.dtype), cv.to(q.dtype), attn_mask=state.cross_keep)
            x = x + layer.dropout2(ca.out_proj(a.transpose(1, 2).reshape(n, e)))
            x = x + layer.dropout3(layer.pos_ffn.ffn(layer.norm3(x)))
        hidden = self.decoder.norm(x)
        new_state = DecoderState(new_k, new_v, state.cross_k, state.cross_v, state.cross_keep, g, state.step + 1)
        return hidden, new_state

    def step(self, tokens_last: Tensor, state: DecoderState, temperature: float = 1.0) -> tuple[Tensor, DecoderState]:
        """tokens_last [N] -> log-probs [N, V] (float32) of the next token, and the new state."""
        hidden, state = self.step_hidden(tokens_last, state)
        logits = self.out_lin(hidden).float()
        if temperature != 1.0:
            logits = logits / temperature
        return torch.log_softmax(logits, dim=-1), state

    def init_static_cache(self, enc: Tensor, wav_lens: Tensor, group: int, max_steps: int) -> StaticDecoderCache:
        """Allocate a :class:`StaticDecoderCache` for enc [B, T', D] (N = B * group rows, T >= max_steps) and load it.

        The self-attention cache has the dtype of the dynamic state (:meth:`init_state`), so both paths round alike.
        """
        if max_steps < 1:
            raise ValueError(f"init_static_cache: max_steps must be >= 1, got {max_steps}")
        state = self.init_state(enc, wav_lens, group=group)
        n, dh, n_layers = state.num_rows, self.d_model // self.nhead, len(self.decoder.layers)
        dtype, dev = state.self_k[0].dtype, enc.device
        cap = -(-max_steps // _STATIC_ALIGN) * _STATIC_ALIGN
        s = state.cross_keep.shape[-1]
        s_pad = -(-s // _STATIC_ALIGN) * _STATIC_ALIGN
        positions = torch.arange(cap, device=dev)
        self_bias = torch.zeros(cap, cap, dtype=dtype, device=dev)
        self_bias.masked_fill_(positions[None, :] > positions[:, None], float("-inf"))
        pe_src = self.positional_encoding.pe[0, :cap]
        pe = torch.zeros(cap, self.d_model, dtype=pe_src.dtype, device=dev)
        pe[: pe_src.shape[0]] = pe_src

        def pad(t: Tensor) -> Tensor:
            return t.new_zeros(*t.shape[:2], s_pad, t.shape[3])

        cache = StaticDecoderCache(
            kv=torch.zeros(n_layers, 2, n, self.nhead, cap, dh, dtype=dtype, device=dev),
            cross_k=[pad(t) for t in state.cross_k],
            cross_v=[pad(t) for t in state.cross_v],
            cross_keep=torch.zeros_like(state.cross_keep),
            positions=positions,
            group=group,
            kv_spare=torch.zeros(n_layers, 2, n, self.nhead, cap, dh, dtype=dtype, device=dev),
            self_bias=self_bias,
            cross_bias=torch.zeros(enc.shape[0], 1, 1, s_pad, dtype=state.cross_k[0].dtype, device=dev),
            pe=pe,
        )
        cache.load(state)
        return cache

    def static_step_hidden(self, tokens_last: Tensor, step: Tensor, cache: StaticDecoderCache) -> Tensor:
        """Shape-static incremental step: tokens_last [N] at position ``step`` (long tensor [1]) -> hidden [N, d_model].

        The same layer as :meth:`step_hidden`, but the new key/value go to position ``step`` of ``cache.kv`` (in place)
        and self-attention covers all T cache positions with the additive mask ``cache.self_bias[step]`` (0 on
        positions <= step, -inf after); cross-attention uses ``cache.cross_bias``: no host sync, no shape that depends
        on the step, so the step can be captured in a CUDA graph.
        """
        n, g, e, h = tokens_last.shape[0], cache.group, self.d_model, self.nhead
        if n != cache.num_rows:
            raise ValueError(f"static_step: got {n} tokens for a cache of {cache.num_rows} rows")
        dh = e // h
        x = self.tgt_embedding(tokens_last.long().view(n, 1)).view(n, e)
        pe = self.positional_encoding.pe[0] if cache.pe is None else cache.pe
        x = x + pe.index_select(0, step).to(x.dtype)  # [1, E] broadcast
        if cache.self_bias is None:
            self_mask = (cache.positions <= step).view(1, 1, 1, -1)  # [1, 1, 1, T] bool
        else:
            self_mask = cache.self_bias.index_select(0, step).view(1, 1, 1, -1)  # [1, 1, 1, T] additive
        cross_mask = cache.cross_keep if cache.cross_bias is None else cache.cross_bias
        for i, layer in enumerate(self.decoder.layers):
            sa = layer.self_attn.att
            qkv = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias).view(n, 3, h, dh)
            q = qkv[:, 0].unsqueeze(2)  # [N, H, 1, dh]
            kv_i = cache.kv[i]  # [2, N, H, T, dh]
            kv_i.index_copy_(3, step, qkv[:, 1:].transpose(0, 1).unsqueeze(3).to(kv_i.dtype))
            a = F.scaled_dot_product_attention(
                q, kv_i[0].to(q.dtype), kv_i[1].to(q.dtype), attn_mask=_mask_as(self_mask, q)
            )
            x = x + layer.dropout1(sa.out_proj(a.reshape(n, e)))

            ca = layer.multihead_attn.att
            q = F.linear(
                layer.norm2(x), ca.in_proj_weight[:e], None if ca.in_proj_bias is None else ca.in_proj_bias[:e]
            )
            q = q.view(n // g, g, h, dh).transpose(1, 2)  # [B, H, G, dh]
            ck, cv = cache.cross_k[i], cache.cross_v[i]
            a = F.scaled_dot_product_attention(q, ck.to(q.dtype), cv.to(q.dtype), attn_mask=_mask_as(cross_mask, q))
            x = x + layer.dropout2(ca.out_proj(a.transpose(1, 2).reshape(n, e)))
            x = x + layer.dropout3(layer.pos_ffn.ffn(layer.norm3(x)))
        return self.decoder.norm(x)

    def static_step(
        self, tokens_last: Tensor, step: Tensor, cache: StaticDecoderCache, temperature: float = 1.0
    ) -> Tensor:
        """tokens_last [N], step long [1] -> log-probs [N, V] (float32); writes the cache in place (see above)."""
        logits = self.out_lin(self.static_step_hidden(tokens_last, step, cache)).float()
        if temperature != 1.0:
            logits = logits / temperature
        return torch.log_softmax(logits, dim=-1)

    def reorder_state(self, state: DecoderState, index: Tensor, same_items: bool = False) -> DecoderState:
        """Select rows: new row r is old row index[r] (index [N'], N' a multiple of the group size).

        The rows of each new group must all come from one old item (beam predecessors, or dropping whole items);
        ``same_items=True`` says the items did not change at all (beam bookkeeping), so the encoder keys/values are
        kept as they are.
        """
        g = state.group
        self_k = [t.index_select(0, index) for t in state.self_k]
        self_v = [t.index_select(0, index) for t in state.self_v]
        if same_items:
            cross_k, cross_v, keep = state.cross_k, state.cross_v, state.cross_keep
        else:
            if index.numel() % g:
                raise ValueError(f"reorder_state: {index.numel()} rows is not a multiple of the group size {g}")
            items = torch.div(index.view(-1, g)[:, 0], g, rounding_mode="floor")
            cross_k = [t.index_select(0, items) for t in state.cross_k]
            cross_v = [t.index_select(0, items) for t in state.cross_v]
            keep = state.cross_keep.index_select(0, items)
        return DecoderState(self_k, self_v, cross_k, cross_v, keep, g, state.step)

    def num_valid_frames(self, enc: Tensor, wav_lens: Tensor) -> Tensor:
        """Absolute valid encoder frames [B] = round(T' * wav_lens) (SpeechBrain's convention)."""
        return torch.round(enc.shape[1] * wav_lens.float()).long()

    # -- optimiser parameter groups ----------------------------------------------------------------------------------
    def encoder_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the encoder (``self.encoder``; frozen ones, requires_grad False, are left out)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def other_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the encoder (front end, projection, decoder, output and CTC layers)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in enc]

    def parameter_groups(self, lr: float, encoder_lr: float | None = None) -> list[dict]:
        """Optimiser groups ``[{"params": encoder, "lr": encoder_lr}, {"params": rest, "lr": lr}]``.

        ``encoder_lr`` None: the encoder uses ``lr`` too. Empty groups are left out (e.g. a frozen encoder).
        Use as ``torch.optim.AdamW(model.parameter_groups(lr=1e-3, encoder_lr=5e-5), weight_decay=...)``.
        """
        groups = [
            {"params": self.encoder_parameters(), "lr": lr if encoder_lr is None else encoder_lr, "name": "encoder"},
            {"params": self.other_parameters(), "lr": lr, "name": "other"},
        ]
        return [g for g in groups if g["params"]]
