"""Shared fixtures of the decoding tests: a tiny Seq2Seq trained (~1 s) to memorise 16 feature -> token pairs."""

from __future__ import annotations

import torch

from slukd.models import Seq2Seq

V = 24
N = 16


def tiny_model(seed: int = 0) -> Seq2Seq:
    """A 1-encoder/2-decoder-layer transformer Seq2Seq over 20-dim features and a 24-token vocabulary."""
    torch.manual_seed(seed)
    return Seq2Seq(
        V,
        encoder_type="transformer",
        d_model=64,
        nhead=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        d_ffn=128,
        cnn_channels=(8, 8),
        dropout=0.0,
        n_mels=20,
    )


def memorised_model() -> tuple[Seq2Seq, torch.Tensor, torch.Tensor, list[list[int]]]:
    """(model, encoder outputs [64, T, D], relative lengths [64], the 16 memorised token sequences).

    The 64 test inputs are the 16 training features and three noisier copies: on the memorised inputs hypotheses
    end early with EOS, on the noisy ones the model is less sure (beams matter) and many run to the maximum length.
    """
    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(N, 40, 20, generator=g)
    lens = torch.linspace(0.6, 1.0, N)
    n_tok = torch.randint(2, 8, (N,), generator=g)
    bos_in = torch.zeros(N, 9, dtype=torch.long)
    tgt = torch.zeros(N, 9, dtype=torch.long)
    targets = []
    for i in range(N):
        s = torch.randint(3, V, (int(n_tok[i]),), generator=g)
        targets.append(s.tolist())
        bos_in[i, 0] = 1
        bos_in[i, 1 : 1 + len(s)] = s
        tgt[i, : len(s)] = s
        tgt[i, len(s)] = 2
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(300):
        logits = m.decode(m.encode_features(feats, lens), lens, bos_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    m.eval()
    test_feats = torch.cat([feats] + [feats + s * torch.randn(feats.shape, generator=g) for s in (0.5, 1.0, 2.0)])
    test_lens = lens.repeat(4)
    with torch.no_grad():
        enc = m.encode_features(test_feats, test_lens)
    return m, enc, test_lens, targets
