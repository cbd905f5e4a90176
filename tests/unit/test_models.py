"""Tests of slukd.models.seq2seq: shapes, padding invariance, incremental step == teacher forcing, plug-in encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slukd.models import AudioEncoder, FbankFeatures, Seq2Seq, count_parameters, length_mask

V = 50


def _small(encoder_type: str = "conformer", **kw) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(
        V, d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2, d_ffn=128, encoder_type=encoder_type, **kw
    ).eval()


def _tokens(b: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, V, (b, length), generator=g)
    toks[:, 0] = 1
    return toks


def test_default_size_and_shapes():
    m = Seq2Seq(100).eval()
    n = count_parameters(m)
    assert 1_000_000 <= n <= 3_000_000, n
    assert m.encoder_dim == 144
    wavs = torch.randn(2, 8000)
    lens = torch.tensor([1.0, 0.6])
    with torch.no_grad():
        out = m(wavs, lens, _tokens(2, 5))
    t = 1 + 8000 // 160
    assert m.compute_features(wavs, lens).shape == (2, t, 40)
    assert out.enc.shape == (2, (t + 3) // 4, 144)
    assert out.logits.shape == (2, 5, 100)
    assert out.ctc_log_probs.shape == (2, (t + 3) // 4, 100)
    assert torch.allclose(out.ctc_log_probs.exp().sum(-1), torch.ones(2, (t + 3) // 4), atol=1e-4)


def test_features_normalised_and_padding_zeroed():
    feats = FbankFeatures(n_mels=64, win_length_ms=32, hop_length_ms=10)
    wavs = torch.randn(2, 16000)
    lens = torch.tensor([1.0, 0.5])
    x = feats(wavs, lens)
    assert x.shape == (2, 101, 64)
    valid = length_mask(lens, x.shape[1])
    assert int(valid[1].sum()) == 50
    assert torch.all(x[1, 50:] == 0)
    assert abs(float(x[1, :50].mean())) < 1e-4 and abs(float(x[1, :50].std(unbiased=False)) - 1) < 1e-3


@pytest.mark.parametrize("encoder_type", ["conformer", "transformer"])
def test_padding_does_not_change_real_items(encoder_type):
    """Item 0 (39 hops of audio) alone vs padded to 63 hops in a batch: same encoder output and logits."""
    m = _small(encoder_type)
    hop = 160
    short = torch.randn(1, 39 * hop)
    long = torch.randn(1, 63 * hop)
    batch = torch.zeros(2, 63 * hop)
    batch[0, : short.shape[1]] = short[0]
    batch[1] = long[0]
    batch[0, short.shape[1] :] = 5.0  # garbage in the padding must not matter
    lens = torch.tensor([39 / 63, 1.0])
    toks = _tokens(2, 6)
    with torch.no_grad():
        alone = m(short, torch.ones(1), toks[:1])
        both = m(batch, lens, toks)
    t_alone = alone.enc.shape[1]
    assert t_alone == 10 and both.enc.shape[1] == 16
    assert torch.allclose(alone.enc[0], both.enc[0, :t_alone], atol=1e-5)
    assert torch.allclose(alone.logits[0], both.logits[0], atol=1e-5)
    assert torch.allclose(alone.ctc_log_probs[0], both.ctc_log_probs[0, :t_alone], atol=1e-5)


def test_step_equals_teacher_forcing_with_groups_and_reorder():
    m = _small()
    wavs = torch.randn(3, 6000)
    lens = torch.tensor([1.0, 0.8, 0.55])
    toks = _tokens(3 * 2, 8)  # 2 rows per item
    with torch.no_grad():
        enc = m.encode(wavs, lens)
        enc_rep = enc.repeat_interleave(2, dim=0)
        lens_rep = lens.repeat_interleave(2)
        ref = torch.log_softmax(m.decode(enc_rep, lens_rep, toks).float(), dim=-1)
        state = m.init_state(enc, lens, group=2)
        out = []
        for i in range(toks.shape[1]):
            lp, state = m.step(toks[:, i], state)
            out.append(lp)
        assert (torch.stack(out, 1) - ref).abs().max() < 1e-5
        # swap the two rows of item 1 (beam bookkeeping), drop item 0 (compaction): one more step each
        perm = torch.tensor([0, 1, 3, 2, 4, 5])
        st2 = m.reorder_state(state, perm, same_items=True)
        nxt = torch.randint(3, V, (6,))
        lp2, _ = m.step(nxt, st2)
        full = torch.cat([toks[perm], nxt[:, None]], dim=1)
        ref2 = torch.log_softmax(m.decode(enc_rep, lens_rep, full).float(), dim=-1)[:, -1]
        assert (lp2 - ref2).abs().max() < 1e-5
        keep = torch.tensor([2, 3, 4, 5])
        st3 = m.reorder_state(state, keep)
        lp3, _ = m.step(nxt[keep], st3)
        full3 = torch.cat([toks[keep], nxt[keep, None]], dim=1)
        ref3 = torch.log_softmax(m.decode(enc_rep[keep], lens_rep[keep], full3).float(), dim=-1)[:, -1]
        assert (lp3 - ref3).abs().max() < 1e-5


class _MeanPoolCNN(AudioEncoder):
    """A plug-in encoder with out_dim != d_model (needs the projection)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_feats, 32, kernel_size=3, stride=2, padding=1)
        self.out_dim = 32

    def forward(self, feats, rel_lens):
        keep = length_mask(rel_lens, feats.shape[1]).unsqueeze(-1)
        return self.conv(feats.masked_fill(~keep, 0).transpose(1, 2)).transpose(1, 2)


def test_plugged_encoder_and_feature_config():
    torch.manual_seed(0)
    m = Seq2Seq(V, encoder=_MeanPoolCNN(64), n_mels=64, win_length_ms=32, hop_length_ms=10, d_model=48, nhead=4)
    m.eval()
    assert m.encoder_dim == 32
    wavs = torch.randn(2, 4000)
    lens = torch.tensor([1.0, 0.7])
    toks = _tokens(2, 4)
    with torch.no_grad():
        out = m(wavs, lens, toks)
        assert out.enc.shape[-1] == 32 and out.logits.shape == (2, 4, V)
        state = m.init_state(out.enc, lens)
        lp, _ = m.step(toks[:, 0], state)
    assert torch.allclose(lp, torch.log_softmax(out.logits[:, 0], -1), atol=1e-5)


def test_training_step_reduces_loss():
    m = _small("transformer")
    m.train()
    wavs = torch.randn(4, 4000)
    lens = torch.ones(4)
    toks = _tokens(4, 6)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        logits = m(wavs, lens, toks[:, :-1]).logits
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), toks[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bf16_autocast_runs():
    m = _small()
    wavs = torch.randn(2, 4000)
    lens = torch.tensor([1.0, 0.5])
    toks = _tokens(2, 5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(wavs, lens, toks)
        state = m.init_state(out.enc, lens)
        lp, state = m.step(toks[:, 0], state)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    ref = torch.log_softmax(out.logits[:, 0].float(), -1)
    assert (lp - ref).abs().max() < 0.1


def test_bad_inputs():
    m = _small()
    with pytest.raises(ValueError, match="relative lengths"):
        m.encode(torch.randn(2, 4000), torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match="shape"):
        m.encode(torch.randn(2, 4000), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="wavs must be"):
        m.encode(torch.randn(2, 1, 4000), torch.ones(2))
    with pytest.raises(ValueError, match="vocab_size"):
        Seq2Seq(2)
    no_ctc = Seq2Seq(V, ctc=False, d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1, d_ffn=32)
    with pytest.raises(RuntimeError, match="ctc=False"):
        no_ctc.ctc_log_probs(torch.randn(1, 3, 32))
