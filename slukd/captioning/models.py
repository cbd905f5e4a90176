"""Teacher and student construction from the YAML model specs.

A spec is a mapping with ``encoder`` in {"conformer", "transformer", "cnn"} plus sizes::

    teacher_model: {encoder: conformer, d_model: 144, nhead: 4, num_encoder_layers: 4, num_decoder_layers: 3,
                    d_ffn: 576, cnn_channels: [32, 32], dropout: 0.1}
    student_model: {encoder: cnn, d_model: 256, nhead: 4, num_decoder_layers: 2, d_ffn: 1024,
                    cnn: {width: 1.1, depth: 1.2, time_stride_stages: [0, 2]}}

Front end (both models, as in the paper's student): 64 log-mel bins, 32 ms window, 10 ms hop, 16 kHz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slukd.models.cnn_encoder import CNNEncoder
from slukd.models.seq2seq import Seq2Seq

FRONT_END = {"n_mels": 64, "win_length_ms": 32.0, "hop_length_ms": 10.0}
_COMMON = {"d_model", "nhead", "num_decoder_layers", "d_ffn", "dropout"}
_SB_ENCODER = _COMMON | {"num_encoder_layers", "cnn_channels"}


def build_model(spec: Mapping[str, Any], vocab_size: int) -> Seq2Seq:
    """A :class:`Seq2Seq` captioner (no CTC head) from a spec; unknown keys raise ValueError naming them."""
    spec = dict(spec)
    kind = spec.pop("encoder", None)
    front = {k: spec.pop(k) for k in list(FRONT_END) if k in spec}
    front = {**FRONT_END, **front}
    if kind == "cnn":
        cnn = dict(spec.pop("cnn", {}) or {})
        unknown = set(spec) - _COMMON
        if unknown:
            raise ValueError(f"unknown keys in a cnn model spec: {sorted(unknown)} (allowed: {sorted(_COMMON)}, cnn)")
        encoder = CNNEncoder(front["n_mels"], **cnn)
        return Seq2Seq(vocab_size, encoder=encoder, ctc=False, **front, **spec)
    if kind in ("conformer", "transformer"):
        unknown = set(spec) - _SB_ENCODER
        if unknown:
            raise ValueError(f"unknown keys in a {kind} model spec: {sorted(unknown)} (allowed: {sorted(_SB_ENCODER)})")
        if "cnn_channels" in spec:
            spec["cnn_channels"] = tuple(spec["cnn_channels"])
        return Seq2Seq(vocab_size, encoder_type=kind, ctc=False, **front, **spec)
    raise ValueError(f"model spec 'encoder' must be conformer, transformer or cnn; got {kind!r}")
