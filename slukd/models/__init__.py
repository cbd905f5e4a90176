"""Shared seq2seq model (``seq2seq``) and fast batched decoding (``decoding``)."""

from slukd.models.seq2seq import (
    AudioEncoder,
    CNNFrontEnd,
    DecoderState,
    FbankFeatures,
    Seq2Seq,
    Seq2SeqOutput,
    SpeechBrainEncoder,
    count_parameters,
    length_mask,
)

__all__ = [
    "AudioEncoder",
    "CNNFrontEnd",
    "DecoderState",
    "FbankFeatures",
    "Seq2Seq",
    "Seq2SeqOutput",
    "SpeechBrainEncoder",
    "count_parameters",
    "length_mask",
]
