"""Frozen teachers: never trained, never changed by the student's optimiser, saved/restored with checkpoints."""

import pytest
import torch
from torch import nn

from slukd.distill import EncoderContrastive, EncoderMSE, Teacher, TokenKL, fingerprint_state_dict


class TinySeq2Seq(nn.Module):
    """Encoder [B, T, F] -> [B, T, H]; decoder logits [B, L, V] from tokens + pooled encoder state."""

    def __init__(self, feats=6, hidden=8, vocab=11):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(feats, hidden), nn.Dropout(0.5), nn.Tanh())
        self.emb = nn.Embedding(vocab, hidden)
        self.norm = nn.BatchNorm1d(hidden)
        self.out = nn.Linear(hidden, vocab)

    def encode(self, x):
        return self.enc(x)

    def decode(self, enc, tokens):
        h = self.emb(tokens) + enc.mean(1, keepdim=True)
        return self.out(self.norm(h.transpose(1, 2)).transpose(1, 2))

    def forward(self, x, tokens):
        enc = self.encode(x)
        return enc, self.decode(enc, tokens)


def test_teacher_is_a_frozen_eval_copy():
    student = TinySeq2Seq()
    teacher = Teacher(student)
    assert teacher.module is not student
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.training and not teacher.module.training
    teacher.train()
    assert not teacher.module.enc[1].training  # dropout stays off
    x, tok = torch.randn(2, 5, 6), torch.randint(0, 11, (2, 3))
    a, b = teacher(x, tok)[1], teacher(x, tok)[1]
    assert torch.equal(a, b) and not a.requires_grad
    enc = teacher.run(lambda m, x: m.encode(x), x)
    assert not enc.requires_grad
    with torch.no_grad():
        student.out.weight.add_(1.0)
    assert not torch.equal(student.out.weight, teacher.module.out.weight)
    assert teacher.device == torch.device("cpu")


def test_gradients_reach_only_student_and_projections():
    torch.manual_seed(0)
    student = TinySeq2Seq(hidden=8)
    teacher = Teacher(TinySeq2Seq(hidden=12))
    mse, con, tok = EncoderMSE(8, 12), EncoderContrastive(8, 12, proj_dim=5), TokenKL(2.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    fp = teacher.fingerprint
    params = list(student.parameters()) + list(mse.parameters()) + list(con.parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    student.train()
    lens = torch.tensor([1.0, 0.6, 0.8])
    for _ in range(3):
        x, tokens = torch.randn(3, 5, 6), torch.randint(0, 11, (3, 4))
        s_enc, s_logits = student(x, tokens)
        t_enc, t_logits = teacher(x, tokens)
        loss = mse(s_enc, t_enc, lens, lens) + con(s_enc, t_enc, lens, lens) + tok(s_logits, t_logits)
        opt.zero_grad()
        loss.backward()
        for p in params:
            assert p.grad is not None
        assert mse.student_proj.weight.grad.abs().sum() > 0 and con.log_temperature.grad != 0
        assert not list(mse.teacher_proj.parameters())  # the MSE target is fixed
        assert all(p.grad is None for p in teacher.parameters())
        opt.step()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats included
    assert teacher.fingerprint == fp
    assert not any(p.requires_grad for p in teacher.parameters())


def test_fingerprint():
    m = TinySeq2Seq()
    fp = fingerprint_state_dict(m)
    assert fp == fingerprint_state_dict(m.state_dict()) == Teacher(m).fingerprint
    assert len(fp) == 64
    with torch.no_grad():
        m.out.bias[3] += 1e-6
    assert fingerprint_state_dict(m) != fp
    assert fingerprint_state_dict(m.to(torch.bfloat16)) != fingerprint_state_dict(m.float())
    with pytest.raises(TypeError):
        fingerprint_state_dict([1, 2])


def test_state_dict_round_trip(tmp_path):
    a, b = TinySeq2Seq(), TinySeq2Seq()
    ta, tb = Teacher(a), Teacher(b)
    assert ta.fingerprint != tb.fingerprint
    torch.save(ta.state_dict(), tmp_path / "teacher.ckpt")
    tb.load_state_dict(torch.load(tmp_path / "teacher.ckpt"))
    assert tb.fingerprint == ta.fingerprint
    assert not any(p.requires_grad for p in tb.parameters()) and not tb.module.training


def test_speechbrain_checkpointer_recovers_teacher(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    t = Teacher(TinySeq2Seq())
    fp = t.fingerprint
    ckpt = Checkpointer(tmp_path, recoverables={"teacher": t})
    ckpt.save_checkpoint()
    t2 = Teacher(TinySeq2Seq())
    assert t2.fingerprint != fp
    Checkpointer(tmp_path, recoverables={"teacher": t2}).recover_if_possible()
    assert t2.fingerprint == fp
    assert not t2.training and not any(p.requires_grad for p in t2.parameters())


def test_teacher_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        Teacher(lambda x: x)
