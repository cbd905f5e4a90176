"""Teacher and student construction from the YAML model specs.

A spec is a mapping with ``encoder`` in {"conformer", "transformer", "cnn", "htsat_bart"} plus sizes::

    teacher_model: {encoder: conformer, d_model: 144, nhead: 4, num_encoder_layers: 4, num_decoder_layers: 3,
                    d_ffn: 576, cnn_channels: [32, 32], dropout: 0.1}
    student_model: {encoder: cnn, d_model: 256, nhead: 4, num_decoder_layers: 2, d_ffn: 1024,
                    cnn: {width: 1.1, depth: 1.2, time_stride_stages: [0, 2]}}
    teacher_model: {encoder: htsat_bart, htsat_source: pretrained/clap-htsat-unfused, bart_source: pretrained/bart-base}

``htsat_bart`` is the paper's HTSAT + BART teacher (:func:`slukd.models.paper_caption.paper_teacher`, needs the
``pretrained`` extra); without the ``*_source`` folders it has random weights at HTSAT-base / BART-base size
(``htsat_config`` / ``bart_config`` override sizes).

Front end (both models, as in the paper's student): 64 log-mel bins, 32 ms window, 10 ms hop, 16 kHz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slukd.models.cnn_encoder import CNNEncoder
from slukd.models.seq2seq import Seq2Seq

if TYPE_CHECKING:
    from slukd.models.paper_caption import BartCaptioner

FRONT_END = {"n_mels": 64, "win_length_ms": 32.0, "hop_length_ms": 10.0}
_COMMON = {"d_model", "nhead", "num_decoder_layers", "d_ffn", "dropout"}
_SB_ENCODER = _COMMON | {"num_encoder_layers", "cnn_channels"}
# the paper's teacher (slukd.models.paper_caption.paper_teacher); sizes come from the folders or the configs
_HTSAT_BART = {"htsat_source", "bart_source", "htsat_config", "bart_config", "use_bart_encoder", "freeze_htsat"}


def build_model(spec: Mapping[str, Any], vocab_size: int) -> Seq2Seq | BartCaptioner:
    """A captioner (no CTC head) from a spec: :class:`Seq2Seq`, or for "htsat_bart" a
    :class:`~slukd.models.paper_caption.BartCaptioner` (same interface); unknown keys raise ValueError naming them."""
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
    if kind == "htsat_bart":
        from slukd.models.paper_caption import paper_teacher

        unknown = set(spec) - _HTSAT_BART
        if unknown:
            raise ValueError(
                f"unknown keys in a htsat_bart model spec: {sorted(unknown)} (allowed: {sorted(_HTSAT_BART)})"
            )
        return paper_teacher(vocab_size, **front, **spec)
    raise ValueError(f"model spec 'encoder' must be conformer, transformer, cnn or htsat_bart; got {kind!r}")


def build_captioner(vocab_size: int, **spec: Any) -> Seq2Seq:
    """:func:`build_model` with the spec as keyword arguments, for YAML: ``model: !name:...build_captioner {...}``
    (the recipe calls it with the vocabulary size)."""
    return build_model(spec, vocab_size)
