"""The EfficientNet-style CNN student encoder: shapes, padding invariance, B2 size, Seq2Seq plug-in."""

from __future__ import annotations

import torch

from slukd.models.cnn_encoder import CNNEncoder
from slukd.models.seq2seq import Seq2Seq, count_parameters


def test_shapes_and_padding_invariance():
    enc = CNNEncoder(32, width=0.25, depth=0.5, max_stages=4, time_stride_stages=(0, 2)).eval()
    assert enc.time_downsampling == 4
    x = torch.randn(2, 100, 32)
    lens = torch.tensor([1.0, 0.6])
    y = enc(x, lens)
    assert y.shape == (2, 25, enc.out_dim)
    x2 = x.clone()
    x2[1, 60:] = 7.0  # garbage in the padding
    assert torch.allclose(enc(x2, lens), y, atol=1e-6)
    alone = enc(x[1:2, :60], torch.tensor([1.0]))
    assert torch.allclose(alone[0], y[1, : alone.shape[1]], atol=1e-5)
    assert torch.all(y[1, 15:] == 0)


def test_b2_scaling_size_and_seq2seq():
    b2 = CNNEncoder(64)  # EfficientNet-B2 scaling: about 7.7M parameters without a classifier
    assert 7.0e6 < count_parameters(b2) < 8.5e6
    enc = CNNEncoder(64, width=0.25, depth=0.5, max_stages=3, out_dim=48)
    model = Seq2Seq(20, encoder=enc, n_mels=64, d_model=32, nhead=2, num_decoder_layers=1, d_ffn=64, ctc=False)
    wavs = torch.randn(2, 16000)
    out = model(wavs, torch.tensor([1.0, 0.5]), torch.ones(2, 3, dtype=torch.long))
    assert out.enc.shape[-1] == 48 and out.logits.shape == (2, 3, 20)
    out.logits.sum().backward()
    assert enc.stem[0].weight.grad is not None
