"""The captioning paper's real model pair: HTSAT + BART-base teacher, EfficientNet-B2 + 2-layer decoder student.

Teacher (:class:`BartCaptioner` with :class:`HTSATEncoder`; :func:`paper_teacher` builds it)::

    wavs [B, S] --FbankFeatures (64 mels, 32 ms / 10 ms)--> feats [B, T, 64]
      --HTSAT (CLAP's audio tower, transformers' ClapAudioModel)--> enc [B, T', 768]     (encode(); encoder_dim 768)
      --Linear(768, d_model)--> [BART encoder (inputs_embeds) when use_bart_encoder] --> memory [B, T', d_model]
      --BART decoder (cross-attention to memory, transformers' BartDecoder)--> tied output layer --> logits [B, L, V]

HTSAT takes a fixed "image" of ``spec_size * freq_ratio`` frames (1024 for HTSAT-base, ``freq_ratio = spec_size //
num_mel_bins``): features are zero-padded to a multiple of it and each chunk is encoded separately (longer clips
are thus encoded chunk by chunk), its output [C, 2, 32] (frequency bins x time frames for HTSAT-base) is averaged
over frequency, the chunks are concatenated in time and trimmed to ``ceil(T * frames_per_chunk / chunk)`` frames
(32x fewer frames than features for HTSAT-base: 10 s -> 1001 features -> 32 frames). Item b is valid on its first
``round(r_b T')`` frames (the project's convention); frames after are set to 0. HTSAT's Swin attention has no key
masking, so padding inside a chunk does change the frames of a shorter clip (as in the original model, which is
trained on padded 10 s clips).

The decoder follows the interface of :class:`~slukd.models.seq2seq.Seq2Seq` that ``slukd.models.decoding`` uses
(``init_state``, ``step``, ``reorder_state``, ``num_valid_frames``, ``bos_index`` / ``eos_index`` / ``vocab_size``),
on transformers' own key/value cache (``EncoderDecoderCache``): the cross-attention keys/values of every layer are
computed once per item in :meth:`BartCaptioner.init_state` and repeated for the beam rows, the self-attention cache
grows by one position per step. It has no shape-static step, so decoding always takes the dynamic path (also on
CUDA).

Student (:func:`paper_student`): :class:`~slukd.models.seq2seq.Seq2Seq` with the EfficientNet-B2-scaled
:class:`~slukd.models.cnn_encoder.CNNEncoder` (width 1.1, depth 1.2, stride 2 in time at all five strided stages:
32x fewer frames, encoder_dim 1408) and a 2-layer transformer decoder (d 256, 4 heads, FFN 1024); weights from a
state_dict file with :func:`load_student`.

Nothing is downloaded: pretrained parts load from local folders (``save_pretrained`` layout): ``htsat_source`` a
CLAP checkpoint (``model_type`` "clap", e.g. an unfused laion/clap-htsat checkpoint; its audio tower is taken) or a
``ClapAudioModel`` one ("clap_audio_model"); ``bart_source`` a ``BartModel`` / ``BartForConditionalGeneration`` one.
When ``vocab_size`` differs from the checkpoint's (a project word vocabulary instead of BART's BPE), the token
embedding (tied to the output layer) is newly initialised and everything else is kept. The default front end is the
student's (16 kHz, 64 mels, per-utterance normalised log-mels); CLAP's own preprocessing differs (48 kHz audio, dB
log-mels, fmax 14 kHz), so pretrained HTSAT weights start from shifted inputs (its first BatchNorm adapts when the
teacher is fine-tuned); pass ``features=`` to use another front end.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slukd.models.cnn_encoder import CNNEncoder
from slukd.models.pretrained import check_local_folder, require_transformers
from slukd.models.seq2seq import AudioEncoder, FbankFeatures, Seq2Seq, Seq2SeqOutput, _check_lens, length_mask

logger = logging.getLogger(__name__)

__all__ = [
    "BART_BASE",
    "HTSAT_BASE",
    "PAPER_STUDENT_SPEC",
    "BartCaptioner",
    "BartDecoderState",
    "HTSATEncoder",
    "load_student",
    "paper_student",
    "paper_teacher",
]

# CLAP's HTSAT-base audio tower (laion/clap-htsat-unfused): Swin-T layout on a 256 x 256 log-mel "image"
HTSAT_BASE: dict[str, Any] = {
    "spec_size": 256,
    "num_mel_bins": 64,
    "patch_size": 4,
    "patch_stride": [4, 4],
    "patch_embed_input_channels": 1,
    "patch_embeds_hidden_size": 96,
    "depths": [2, 2, 6, 2],
    "num_attention_heads": [4, 8, 16, 32],
    "window_size": 8,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "hidden_act": "gelu",
    "hidden_size": 768,
    "enable_fusion": False,
    "enable_patch_layer_norm": True,
    "flatten_patch_embeds": True,
    "drop_path_rate": 0.0,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-5,
}

# facebook/bart-base
BART_BASE: dict[str, Any] = {
    "vocab_size": 50265,
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "max_position_embeddings": 1024,
    "activation_function": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "decoder_layerdrop": 0.0,
    "scale_embedding": False,
    "init_std": 0.02,
}

# the paper's student as a slukd.captioning.models spec (EfficientNet-B2 scaling, 32x time downsampling)
PAPER_STUDENT_SPEC: dict[str, Any] = {
    "encoder": "cnn",
    "d_model": 256,
    "nhead": 4,
    "num_decoder_layers": 2,
    "d_ffn": 1024,
    "dropout": 0.1,
    "cnn": {"width": 1.1, "depth": 1.2, "time_stride_stages": [0, 2, 3, 4, 6]},
}

_FRONT_END = {"n_mels": 64, "win_length_ms": 32.0, "hop_length_ms": 10.0}


# ----------------------------------------------------------------------------------------------------------------------
# Loading helpers
# ----------------------------------------------------------------------------------------------------------------------
def _read_config(folder: Path, what: str) -> dict:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{what}: cannot read {path}: {err}") from err


def _read_weights(folder: Path, what: str) -> dict[str, Tensor]:
    """All tensors of a save_pretrained folder (model.safetensors, sharded safetensors, or pytorch_model.bin)."""
    index = folder / "model.safetensors.index.json"
    files: list[Path]
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted({folder / name for name in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{what}: no *.safetensors or pytorch_model*.bin in {folder}")
    state: dict[str, Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(f)))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def _cache_kwarg() -> str:
    """Name of the decoder's cache argument: ``cache`` where transformers renamed it (5.24 has both, the old name
    deprecated), else ``past_key_values``."""
    from transformers.models.bart.modeling_bart import BartDecoder

    params = inspect.signature(BartDecoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# ----------------------------------------------------------------------------------------------------------------------
# HTSAT
# ----------------------------------------------------------------------------------------------------------------------
class HTSATEncoder(AudioEncoder):
    """CLAP's HTSAT audio tower: feats [B, T, num_mel_bins] -> enc [B, T', C] (see the module docstring).

    Args:
        source: local folder of a CLAP / ClapAudioModel checkpoint (None: random weights from ``config``).
        config: ClapAudioConfig values over :data:`HTSAT_BASE`; only without ``source``.
        freeze: keep every HTSAT parameter fixed (requires_grad False, eval mode, run under no_grad).

    ``out_dim`` = C = ``patch_embeds_hidden_size * 2 ** (len(depths) - 1)`` (768 for HTSAT-base);
    ``chunk_frames`` input frames per chunk, ``frames_per_chunk`` output frames per chunk.
    """

    def __init__(
        self, source: str | os.PathLike | None = None, *, config: Mapping[str, Any] | None = None, freeze: bool = False
    ) -> None:
        super().__init__()
        require_transformers()
        from transformers import ClapAudioConfig, ClapAudioModel, ClapConfig

        folder = None
        if source is not None:
            if config is not None:
                raise ValueError("HTSATEncoder: give either source (a checkpoint folder) or config, not both")
            folder = check_local_folder(source, "HTSATEncoder")
            kind = _read_config(folder, "HTSATEncoder").get("model_type")
            if kind == "clap":
                cfg = ClapConfig.from_pretrained(str(folder)).audio_config
            elif kind == "clap_audio_model":
                cfg = ClapAudioConfig.from_pretrained(str(folder))
            else:
                raise ValueError(
                    f"HTSATEncoder: {folder}/config.json has model_type {kind!r}; expected 'clap' or 'clap_audio_model'"
                )
        else:
            cfg = ClapAudioConfig(**{**HTSAT_BASE, **dict(config or {})})
        where = f"{folder}/config.json" if folder is not None else "HTSATEncoder config"
        if cfg.enable_fusion:
            raise ValueError(f"{where}: enable_fusion (a fused CLAP checkpoint) is not supported; use an unfused one")
        if cfg.spec_size % cfg.num_mel_bins:
            raise ValueError(f"{where}: spec_size {cfg.spec_size} is not a multiple of num_mel_bins {cfg.num_mel_bins}")
        self.model = ClapAudioModel(cfg)
        if folder is not None:
            self._load(folder)
        self.model.float()
        stride_t = cfg.patch_stride[1] if isinstance(cfg.patch_stride, (list, tuple)) else cfg.patch_stride
        n_stages = len(cfg.depths)
        self.n_mels = int(cfg.num_mel_bins)
        self.freq_ratio = cfg.spec_size // cfg.num_mel_bins
        self.chunk_frames = cfg.spec_size * self.freq_ratio
        self.frames_per_chunk = self.freq_ratio * (cfg.spec_size // 2 ** (n_stages - 1) // stride_t)
        self.out_dim = int(self.model.audio_encoder.num_features)
        self.freeze = bool(freeze)
        if self.freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def _load(self, folder: Path) -> None:
        """Audio-tower weights of a CLAP checkpoint (keys ``audio_model.*``) or a ClapAudioModel one."""
        state = _read_weights(folder, "HTSATEncoder")
        prefix = "audio_model."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        own = self.model.state_dict()
        missing = [k for k, _ in self.model.named_parameters() if k not in state]
        if missing:
            raise ValueError(f"HTSATEncoder: {folder} lacks {len(missing)} HTSAT parameters, e.g. {missing[:3]}")
        try:
            self.model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        except RuntimeError as err:
            raise ValueError(f"HTSATEncoder: weights in {folder} do not fit its config.json: {err}") from err

    def train(self, mode: bool = True) -> HTSATEncoder:
        super().train(mode)
        if getattr(self, "freeze", False):
            self.model.eval()
        return self

    def num_frames(self, num_feature_frames: int) -> int:
        """T' = ceil(T * frames_per_chunk / chunk_frames)."""
        return -(-num_feature_frames * self.frames_per_chunk // self.chunk_frames)

    def forward(self, feats: Tensor, rel_lens: Tensor) -> Tensor:
        """feats [B, T, n_mels], rel_lens [B] -> enc [B, T', out_dim]; frames past round(r_b T') are 0."""
        if feats.dim() != 3 or feats.shape[-1] != self.n_mels:
            raise ValueError(f"HTSATEncoder expects feats [B, T, {self.n_mels}], got {tuple(feats.shape)}")
        _check_lens(feats, rel_lens, "HTSATEncoder")
        if self.freeze:
            with torch.no_grad():
                return self._encode(feats, rel_lens)
        return self._encode(feats, rel_lens)

    def _encode(self, feats: Tensor, rel_lens: Tensor) -> Tensor:
        b, t, f = feats.shape
        n = -(-t // self.chunk_frames)
        x = torch.nn.functional.pad(feats, (0, 0, 0, n * self.chunk_frames - t))
        h = self.model(input_features=x.reshape(b * n, 1, self.chunk_frames, f)).last_hidden_state
        if h.dim() != 4 or h.shape[-1] != self.frames_per_chunk:  # pragma: no cover - guards the arithmetic above
            raise RuntimeError(f"HTSATEncoder: expected {self.frames_per_chunk} frames per chunk, got {tuple(h.shape)}")
        h = h.mean(dim=2).transpose(1, 2).reshape(b, n * self.frames_per_chunk, h.shape[1])  # [B, n * fpc, C]
        t_out = self.num_frames(t)
        h = h[:, :t_out]
        return h * length_mask(rel_lens, t_out).unsqueeze(-1).to(h.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# BART decoder
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class BartDecoderState:
    """Incremental decoder state for N = n_items * group rows (rows of one item are consecutive).

    cache: transformers' ``EncoderDecoderCache`` (self-attention keys/values of the ``step`` tokens consumed so far,
    cross-attention keys/values per layer [N, H, S, dh], computed once); memory: [N, S, d_model] the rows' encoder
    memory (passed to the decoder for the cross-attention shapes; its keys/values come from the cache);
    memory_mask: [N, S] long (1 = valid frame) or None when every frame is valid. The cache is updated in place by
    :meth:`BartCaptioner.step` and :meth:`BartCaptioner.reorder_state`: only the returned state is valid.
    """

    cache: Any
    memory: Tensor
    memory_mask: Tensor | None
    group: int
    step: int

    @property
    def num_rows(self) -> int:
        return self.memory.shape[0]


class BartCaptioner(nn.Module):
    """Audio encoder + BART decoder captioner (the paper's teacher); see the module docstring.

    Args:
        vocab_size: output vocabulary V (the project's; a checkpoint with another vocabulary gets a new embedding).
        encoder: the audio encoder (e.g. :class:`HTSATEncoder`), feats [B, T, F] -> [B, T', encoder_dim].
        bart_source: local folder of a BART checkpoint (None: random weights from ``bart_config``).
        bart_config: BartConfig values over :data:`BART_BASE` (only without ``bart_source``).
        use_bart_encoder: run the projected audio frames through BART's encoder (as inputs_embeds) before the decoder
            cross-attends to them (the usual HTSAT-BART captioner); False: the decoder attends to the projection.
        features: front end (default ``FbankFeatures(n_mels, sample_rate, win_length_ms, hop_length_ms)``).
        pad_index, bos_index, eos_index: token ids (BART's own vocabulary: pad 1, eos 2, start 2).
        tie_embeddings: output layer weight = decoder token embedding (as BART), plus a bias.

    Attributes as :class:`Seq2Seq` where the project uses them: ``vocab_size``, ``pad_index`` / ``bos_index`` /
    ``eos_index``, ``d_model``, ``encoder_dim``, ``features``, ``encoder``, ``enc_proj``, ``decoder`` (transformers'
    BartDecoder), ``bart_encoder`` (BartEncoder or None), ``out_lin``, ``ctc_lin`` (None).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        encoder: AudioEncoder,
        bart_source: str | os.PathLike | None = None,
        bart_config: Mapping[str, Any] | None = None,
        use_bart_encoder: bool = True,
        features: nn.Module | None = None,
        n_mels: int = 64,
        win_length_ms: float = 32.0,
        hop_length_ms: float = 10.0,
        sample_rate: int = 16000,
        pad_index: int = 0,
        bos_index: int = 1,
        eos_index: int = 2,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        require_transformers()
        from transformers import BartConfig, BartModel
        from transformers.models.bart.modeling_bart import BartScaledWordEmbedding

        if vocab_size <= max(pad_index, bos_index, eos_index):
            raise ValueError(f"vocab_size={vocab_size} too small for pad/bos/eos {pad_index}/{bos_index}/{eos_index}")
        if not hasattr(encoder, "out_dim"):
            raise TypeError("encoder must define out_dim (see slukd.models.seq2seq.AudioEncoder)")
        self.vocab_size = vocab_size
        self.pad_index, self.bos_index, self.eos_index = pad_index, bos_index, eos_index
        self.features = (
            features if features is not None else FbankFeatures(n_mels, sample_rate, win_length_ms, hop_length_ms)
        )
        self.encoder = encoder
        self.encoder_dim: int = int(encoder.out_dim)
        ids = {"pad_token_id": pad_index, "bos_token_id": bos_index, "eos_token_id": eos_index}
        if bart_source is not None:
            if bart_config is not None:
                raise ValueError("BartCaptioner: give bart_source (a checkpoint folder) or bart_config, not both")
            folder = check_local_folder(bart_source, "BartCaptioner")
            kind = _read_config(folder, "BartCaptioner").get("model_type")
            if kind != "bart":
                raise ValueError(f"BartCaptioner: {folder}/config.json has model_type {kind!r}, expected 'bart'")
            bart = BartModel.from_pretrained(str(folder)).float()
        else:
            extra = dict(bart_config or {})
            clash = sorted(set(extra) & ({"vocab_size"} | set(ids)))
            if clash:
                raise ValueError(f"BartCaptioner: bart_config must not set {clash} (use the constructor arguments)")
            bart = BartModel(BartConfig(**{**BART_BASE, **extra, "vocab_size": vocab_size, **ids}))
        cfg = bart.config
        self.d_model = int(cfg.d_model)
        self.nhead = int(cfg.decoder_attention_heads)
        self.enc_proj = nn.Linear(self.encoder_dim, self.d_model)
        self.bart_encoder = bart.encoder if use_bart_encoder else None
        if self.bart_encoder is not None:
            self.bart_encoder.embed_tokens = None  # fed inputs_embeds only: no (unused) token embedding
        self.decoder = bart.decoder
        emb = self.decoder.embed_tokens
        if emb.num_embeddings != vocab_size or emb.padding_idx != pad_index:
            if bart_source is not None:
                logger.warning(
                    "BartCaptioner: %s has vocabulary %d (pad %s); a new embedding for %d tokens (pad %d) is trained",
                    bart_source,
                    emb.num_embeddings,
                    emb.padding_idx,
                    vocab_size,
                    pad_index,
                )
            new = BartScaledWordEmbedding(vocab_size, self.d_model, pad_index, embed_scale=emb.embed_scale)
            nn.init.normal_(new.weight, std=cfg.init_std)
            with torch.no_grad():
                new.weight[pad_index].zero_()
            self.decoder.embed_tokens = new
        self.out_lin = nn.Linear(self.d_model, vocab_size)
        nn.init.zeros_(self.out_lin.bias)
        if tie_embeddings:
            self.out_lin.weight = self.decoder.embed_tokens.weight
        self.ctc_lin = None
        self.max_target_len = int(cfg.max_position_embeddings)
        self._cache_kw = _cache_kwarg()

    # -- encoder ---------------------------------------------------------------------------------------------------
    def compute_features(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """wavs [B, S] -> features [B, T, F]."""
        return self.features(wavs, wav_lens)

    def encode_features(self, feats: Tensor, wav_lens: Tensor) -> Tensor:
        """feats [B, T, F] -> enc [B, T', encoder_dim]."""
        _check_lens(feats, wav_lens, "BartCaptioner.encode_features")
        return self.encoder(feats, wav_lens)

    def encode(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """wavs [B, S] -> enc [B, T', encoder_dim] (the audio encoder's frames, used for encoder-level KD)."""
        return self.encode_features(self.compute_features(wavs, wav_lens), wav_lens)

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        raise RuntimeError("BartCaptioner has no CTC head")

    # -- decoder ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _keep(enc: Tensor, enc_lens: Tensor | None) -> Tensor:
        """[B, T'] valid encoder frames (t < enc_lens[b]; all when None); the first frame always counts."""
        keep = torch.ones(enc.shape[:2], dtype=torch.bool, device=enc.device)
        if enc_lens is not None:
            keep = torch.arange(enc.shape[1], device=enc.device)[None, :] < enc_lens.to(enc.device)[:, None]
            keep[:, 0] = True
        return keep

    def memory(self, enc: Tensor, keep: Tensor) -> Tensor:
        """enc [B, T', encoder_dim] -> Linear -> (BART encoder) -> memory [B, T', d_model]; keep [B, T'] bool."""
        if enc.shape[1] > self.max_target_len and self.bart_encoder is not None:
            raise ValueError(f"BartCaptioner: {enc.shape[1]} encoder frames exceed BART's {self.max_target_len}")
        mem = self.enc_proj(enc)
        if self.bart_encoder is not None:
            mask = None if bool(keep.all()) else keep.long()
            mem = self.bart_encoder(inputs_embeds=mem, attention_mask=mask).last_hidden_state
        return mem

    def decoder_hidden(self, enc: Tensor, enc_lens: Tensor | None, tokens: Tensor) -> Tensor:
        """Teacher-forced decoder pass: tokens [B, L] -> last hidden states [B, L, d_model] (causal self-attention).

        enc_lens: absolute valid encoder frames [B] (None = all valid), as :meth:`Seq2Seq.decoder_hidden` (so
        SpeechBrain's stock searchers run on this model through ``slukd.models.decoding.stock_searcher``).
        """
        if tokens.shape[1] > self.max_target_len:
            raise ValueError(f"BartCaptioner: {tokens.shape[1]} tokens exceed BART's {self.max_target_len} positions")
        keep = self._keep(enc, enc_lens)
        mem = self.memory(enc, keep)
        mask = None if bool(keep.all()) else keep.long()
        out = self.decoder(
            input_ids=tokens.long(), encoder_hidden_states=mem, encoder_attention_mask=mask, use_cache=False
        )
        return out.last_hidden_state

    def decode(self, enc: Tensor, wav_lens: Tensor, tokens_bos: Tensor) -> Tensor:
        """Teacher-forced logits [B, L, V] for inputs tokens_bos [B, L] (bos + target, padded)."""
        _check_lens(enc, wav_lens, "BartCaptioner.decode")
        return self.out_lin(self.decoder_hidden(enc, self.num_valid_frames(enc, wav_lens), tokens_bos))

    def forward(self, wavs: Tensor, wav_lens: Tensor, tokens_bos: Tensor) -> Seq2SeqOutput:
        enc = self.encode(wavs, wav_lens)
        return Seq2SeqOutput(enc=enc, logits=self.decode(enc, wav_lens, tokens_bos), ctc_log_probs=None)

    # -- incremental decoding (slukd.models.decoding) ---------------------------------------------------------------
    def init_state(self, enc: Tensor, wav_lens: Tensor, group: int = 1) -> BartDecoderState:
        """Start decoding N = B * group rows: memory and the cross-attention keys/values computed once per item.

        Per decoder layer, K = k_proj(memory), V = v_proj(memory) as [B, H, S, dh], repeated for the group's rows and
        stored in the cross-attention half of an ``EncoderDecoderCache`` (so transformers reuses them every step).
        """
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        _check_lens(enc, wav_lens, "BartCaptioner.init_state")
        keep = self._keep(enc, self.num_valid_frames(enc, wav_lens))
        mem = self.memory(enc, keep)
        b, s, _ = mem.shape
        cross = DynamicCache()
        for i, layer in enumerate(self.decoder.layers):
            att = layer.encoder_attn
            k = att.k_proj(mem).view(b, s, -1, att.head_dim).transpose(1, 2)
            v = att.v_proj(mem).view(b, s, -1, att.head_dim).transpose(1, 2)
            if group > 1:
                k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
            cross.update(k, v, i)
        cache = EncoderDecoderCache(DynamicCache(), cross)
        rows = mem.repeat_interleave(group, dim=0) if group > 1 else mem
        mask = None if bool(keep.all()) else keep.long().repeat_interleave(group, dim=0)
        return BartDecoderState(cache=cache, memory=rows, memory_mask=mask, group=group, step=0)

    def step(
        self, tokens_last: Tensor, state: BartDecoderState, temperature: float = 1.0
    ) -> tuple[Tensor, BartDecoderState]:
        """tokens_last [N] (token at position state.step) -> log-probs [N, V] (float32) of the next token, new state."""
        n = tokens_last.shape[0]
        if n != state.num_rows:
            raise ValueError(f"step: got {n} tokens for a state of {state.num_rows} rows")
        out = self.decoder(
            input_ids=tokens_last.long().view(n, 1),
            encoder_hidden_states=state.memory,
            encoder_attention_mask=state.memory_mask,
            use_cache=True,
            **{self._cache_kw: state.cache},
        )
        logits = self.out_lin(out.last_hidden_state[:, -1]).float()
        if temperature != 1.0:
            logits = logits / temperature
        new = BartDecoderState(state.cache, state.memory, state.memory_mask, state.group, state.step + 1)
        return torch.log_softmax(logits, dim=-1), new

    def reorder_state(self, state: BartDecoderState, index: Tensor, same_items: bool = False) -> BartDecoderState:
        """Select rows: new row r is old row index[r] (N' a multiple of the group size; see Seq2Seq.reorder_state).

        ``same_items=True`` (beam bookkeeping): only the self-attention cache is reordered, since the rows of an item
        share its cross-attention keys/values.
        """
        g = state.group
        if same_items:
            state.cache.self_attention_cache.reorder_cache(index)
            return BartDecoderState(state.cache, state.memory, state.memory_mask, g, state.step)
        if index.numel() % g:
            raise ValueError(f"reorder_state: {index.numel()} rows is not a multiple of the group size {g}")
        state.cache.reorder_cache(index)
        mask = None if state.memory_mask is None else state.memory_mask.index_select(0, index)
        return BartDecoderState(state.cache, state.memory.index_select(0, index), mask, g, state.step)

    def num_valid_frames(self, enc: Tensor, wav_lens: Tensor) -> Tensor:
        """Absolute valid encoder frames [B] = round(T' * wav_lens) (SpeechBrain's convention)."""
        return torch.round(enc.shape[1] * wav_lens.float()).long()

    # -- optimiser parameter groups (as Seq2Seq) ---------------------------------------------------------------------
    encoder_parameters = Seq2Seq.encoder_parameters
    other_parameters = Seq2Seq.other_parameters
    parameter_groups = Seq2Seq.parameter_groups


# ----------------------------------------------------------------------------------------------------------------------
# The paper's pair
# ----------------------------------------------------------------------------------------------------------------------
def paper_teacher(
    vocab_size: int = BART_BASE["vocab_size"],
    *,
    htsat_source: str | os.PathLike | None = None,
    bart_source: str | os.PathLike | None = None,
    htsat_config: Mapping[str, Any] | None = None,
    bart_config: Mapping[str, Any] | None = None,
    use_bart_encoder: bool = True,
    freeze_htsat: bool = False,
    features: nn.Module | None = None,
    n_mels: int = 64,
    win_length_ms: float = 32.0,
    hop_length_ms: float = 10.0,
    sample_rate: int = 16000,
    pad_index: int = 0,
    bos_index: int = 1,
    eos_index: int = 2,
) -> BartCaptioner:
    """HTSAT + BART teacher: pretrained parts from local folders, or random weights at HTSAT-base / BART-base size.

    With the defaults (no folders) and vocab 50265 this is the paper's 170M-parameter architecture (168M). The front
    end (``features``, default FbankFeatures(n_mels, ...)) must give HTSAT's ``num_mel_bins`` (64) mels.
    """
    encoder = HTSATEncoder(htsat_source, config=htsat_config, freeze=freeze_htsat)
    n_feats = int(getattr(features, "n_mels", n_mels))
    if encoder.n_mels != n_feats:
        raise ValueError(f"paper_teacher: the front end gives {n_feats} mels, HTSAT expects {encoder.n_mels}")
    return BartCaptioner(
        vocab_size,
        encoder=encoder,
        features=features,
        bart_source=bart_source,
        bart_config=bart_config,
        use_bart_encoder=use_bart_encoder,
        n_mels=n_mels,
        win_length_ms=win_length_ms,
        hop_length_ms=hop_length_ms,
        sample_rate=sample_rate,
        pad_index=pad_index,
        bos_index=bos_index,
        eos_index=eos_index,
    )


def paper_student(vocab_size: int, spec: Mapping[str, Any] | None = None) -> Seq2Seq:
    """The EfficientNet-B2 + 2-layer-decoder student (:data:`PAPER_STUDENT_SPEC`, keys of ``spec`` override it)."""
    full = {**PAPER_STUDENT_SPEC, **_FRONT_END, **dict(spec or {})}
    if full.pop("encoder") != "cnn":
        raise ValueError("paper_student: the student's encoder is the CNN (spec 'encoder' must be 'cnn')")
    cnn = dict(full.pop("cnn", {}) or {})
    return Seq2Seq(vocab_size, encoder=CNNEncoder(full["n_mels"], **cnn), ctc=False, **full)


def load_student(
    path: str | os.PathLike, vocab_size: int, spec: Mapping[str, Any] | None = None, map_location: str = "cpu"
) -> Seq2Seq:
    """:func:`paper_student` with the weights of a state_dict file (``torch.save(model.state_dict())``, or a dict
    with the state_dict under "model", as the training checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_student: no file {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model = paper_student(vocab_size, spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"load_student: {path} is not a state_dict of this student: {err}") from err
    return model
