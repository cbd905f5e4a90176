"""The SLU loss wiring, pinned: SLUBrain.compute_objectives applies the KD terms to the memory items only, alpha
comes from the batch's memory count, tok-KD ignores padded positions, seq-KD trains on the teacher's hypotheses,
and KD terms with trainable heads are registered (optimised, clipped, checkpointed). Every expected value is
computed by hand from the model's outputs, so changing the wiring (e.g. KD on every item) fails a test."""

from __future__ import annotations

import math

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from slukd.distill import EncoderKD, SeqKD, Teacher, TeacherTargets, TokenKD, masked_mean, sequence_nll
from slukd.models.seq2seq import Seq2Seq
from slukd.slu import SLUBrain

V, BOS, EOS = 14, 1, 2
HYPS = {"u1": [5, 6, 7], "u3": [8, 9]}  # the teacher's hypotheses of the two memory items


def _model(seed: int) -> Seq2Seq:
    torch.manual_seed(seed)
    m = Seq2Seq(V, n_mels=8, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, d_ffn=32,
                cnn_channels=(4, 4), dropout=0.0)  # fmt: skip
    return m.eval()


def _batch(pad_token: int = 0) -> PaddedBatch:
    g = torch.Generator().manual_seed(3)
    targets = [[3, 4, 5, 6], [7, 8], [9, 10, 11], [12]]
    items = []
    for i, y in enumerate(targets):
        wav = torch.randn(1600 + 400 * i, generator=g)
        items.append({"id": f"u{i}", "sig": wav, "tokens_bos": torch.tensor([BOS] + y), "tokens_eos": torch.tensor(
            y + [EOS]), "tokens": torch.tensor(y), "is_memory": int(i in (1, 3))})  # fmt: skip
    batch = PaddedBatch(items)
    if pad_token:  # fill the padding of the decoder input with real tokens: must change nothing the loss sees
        bos, lens = batch.tokens_bos
        n = torch.round(lens * bos.shape[1]).long()
        pos = torch.arange(bos.shape[1])[None, :] >= n[:, None]
        bos[pos] = pad_token
    return batch


def _brain(tmp_path, weights=(1.0, 1.0, 1.0), enc_kind="mse", run_opts=None) -> SLUBrain:
    student, teacher = _model(0), Teacher(_model(1))
    terms = [EncoderKD(weights[0], kind=enc_kind, proj_dim=8), TokenKD(weights[1], temperature=2.0),
             SeqKD(weights[2])]  # fmt: skip
    for t in terms:
        t.setup(student.encoder_dim, student.encoder_dim)
    targets = TeacherTargets(tmp_path, teacher.fingerprint, hyps=True, emb=False)
    targets.hyps = dict(HYPS)
    brain = SLUBrain(
        modules={"model": student}, opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams={"ctc_weight": 0.0, "label_smoothing": 0.0, "max_grad_norm": 1.0},
        run_opts=run_opts or {"device": "cpu"}, teacher=teacher, kd_terms=terms, kd_mode="alpha", targets=targets,
    )  # fmt: skip
    brain.bos_id, brain.eos_id = BOS, EOS
    brain.modules.eval()
    return brain


def _by_hand(brain: SLUBrain, batch, rows: torch.Tensor, weights=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """(1 - a) L_sup + a (w_enc MSE + w_tok T^2 KL + w_seq CE), KD on ``rows``, a = sqrt(|memory| / B)."""
    model, teacher = brain._model, brain.teacher.module
    wavs, lens = batch.sig
    bos, _ = batch.tokens_bos
    eos, eos_lens = batch.tokens_eos
    with torch.no_grad():
        res = model(wavs, lens, bos)
        sup = sequence_nll(torch.log_softmax(res.logits, -1), eos, lens=eos_lens)
        t_enc = teacher.encode(wavs[rows], lens[rows])
        mse = ((masked_mean(res.enc[rows], lens[rows]) - masked_mean(t_enc, lens[rows])) ** 2).mean()
        n = torch.round(eos_lens[rows] * eos.shape[1]).long()
        mask = torch.arange(eos.shape[1])[None, :] < n[:, None]
        t_log = torch.log_softmax(teacher.decode(t_enc, lens[rows], bos[rows]) / 2.0, -1)
        s_log = torch.log_softmax(res.logits[rows] / 2.0, -1)
        kl = (t_log.exp() * (t_log - s_log)).sum(-1)
        tok = 4.0 * kl[mask].mean()
        seq_terms = []
        for r in rows.tolist():
            hyp = HYPS.get(f"u{r}")
            if hyp is None:
                continue
            logits = model.decode(res.enc[r : r + 1], lens[r : r + 1], torch.tensor([[BOS] + hyp]))
            seq_terms.append((-torch.log_softmax(logits, -1)[0, range(len(hyp) + 1), hyp + [EOS]]).tolist())
        flat = [x for t in seq_terms for x in t]
        seq = torch.tensor(sum(flat) / len(flat))
        alpha = math.sqrt(int(batch.is_memory.sum()) / len(batch.id))
        kd = weights[0] * mse + weights[1] * tok + weights[2] * seq
        return (1 - alpha) * sup + alpha * kd


def test_kd_applies_to_memory_items_only_with_alpha_from_the_memory_count(tmp_path):
    brain, batch = _brain(tmp_path), _batch()
    with torch.no_grad():
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
        got = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    memory_rows = torch.tensor([1, 3])
    assert got.item() == pytest.approx(_by_hand(brain, batch, memory_rows).item(), rel=1e-5)
    assert brain._parts["alpha"] == pytest.approx(math.sqrt(2 / 4))
    every_row = _by_hand(brain, batch, torch.arange(4))  # the wiring a regression could introduce
    assert abs(every_row.item() - got.item()) > 1e-3
    for name in ("kd_enc", "kd_tok", "kd_seq", "sup"):
        assert name in brain._parts


def test_a_batch_without_memory_items_is_supervised_only(tmp_path):
    brain, batch = _brain(tmp_path), _batch()
    batch.is_memory[:] = 0
    with torch.no_grad():
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
        got = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
        _, eos_lens = batch.tokens_eos
        sup = sequence_nll(torch.log_softmax(out["logits"], -1), batch.tokens_eos[0], lens=eos_lens)
    assert got.item() == pytest.approx(sup.item()) and "alpha" not in brain._parts


def test_tok_kd_ignores_padded_positions(tmp_path):
    brain = _brain(tmp_path, weights=(0.0, 1.0, 0.0))
    values, logits = [], []
    for pad in (0, 13):
        batch = _batch(pad_token=pad)
        with torch.no_grad():
            out = brain.compute_forward(batch, sb.Stage.TRAIN)
            brain._parts = {}
            brain.compute_objectives(out, batch, sb.Stage.TRAIN)
        values.append(brain._parts["kd_tok"])
        logits.append(out["logits"])
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    # the padded decoder inputs did change the logits at padded positions: the mask is not vacuous
    assert not torch.allclose(logits[0], logits[1])


def test_seq_kd_trains_on_the_teachers_hypotheses(tmp_path):
    brain, batch = _brain(tmp_path, weights=(0.0, 0.0, 1.0)), _batch()
    with torch.no_grad():
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
        brain.compute_objectives(out, batch, sb.Stage.TRAIN)
        seq = brain._parts["kd_seq"]
        brain.targets.hyps = {"u1": [3, 3, 3], "u3": [10]}  # other hypotheses: another loss
        brain._parts = {}
        brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    assert abs(brain._parts["kd_seq"] - seq) > 1e-3
    # and the value is the CE of the student decoder on exactly those hypotheses
    model = brain._model
    wavs, lens = batch.sig
    with torch.no_grad():
        ce = []
        for r, hyp in ((1, [3, 3, 3]), (3, [10])):
            logits = model.decode(out["enc"][r : r + 1], lens[r : r + 1], torch.tensor([[BOS] + hyp]))
            ce += (-torch.log_softmax(logits, -1)[0, range(len(hyp) + 1), hyp + [EOS]]).tolist()
    assert brain._parts["kd_seq"] == pytest.approx(sum(ce) / len(ce), rel=1e-5)


def test_kd_heads_are_registered_optimised_clipped_and_checkpointed(tmp_path):
    from slukd.train import CompleteCheckpointer

    brain = _brain(tmp_path, enc_kind="contrastive")
    assert "kd_enc" in brain.modules and any(p.requires_grad for p in brain.modules["kd_enc"].parameters())
    ckpt = CompleteCheckpointer(tmp_path / "ckpt", recoverables={"model": brain._model})
    brain2 = SLUBrain(
        modules={"model": brain._model}, opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams={"ctc_weight": 0.0, "label_smoothing": 0.0, "max_grad_norm": 1e-6}, run_opts={"device": "cpu"},
        checkpointer=ckpt, teacher=brain.teacher, kd_terms=[t for t in [brain.kd_terms[0]]], kd_mode="alpha",
        targets=brain.targets,
    )  # fmt: skip
    assert "kd_enc" in ckpt.recoverables
    brain2.init_optimizers()
    head = list(brain2.modules["kd_enc"].parameters())
    opt_params = {id(p) for g in brain2.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in head)
    # clipping covers the head: with max_grad_norm ~0 every parameter, head included, barely moves
    batch = _batch()
    before = [p.detach().clone() for p in head]
    brain2.modules.train()
    brain2.fit_batch(batch)
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(head, before))
    assert 0 < moved < 1e-5


@pytest.mark.parametrize("precision,dtype", [("fp32", None), ("bf16", torch.bfloat16)])
def test_precision_run_option_reaches_the_training_step(tmp_path, precision, dtype):
    """``--precision`` (a SpeechBrain run option) sets the autocast of the student's forward inside fit_batch, with
    the KD terms on: fp32 runs without autocast, bf16 under CPU autocast in bfloat16; the step still updates."""
    brain = _brain(tmp_path, run_opts={"device": "cpu", "precision": precision})
    seen = []
    model = brain._model
    forward = model.forward

    def recording_forward(*args, **kwargs):
        on = torch.is_autocast_enabled("cpu")
        seen.append((on, torch.get_autocast_dtype("cpu") if on else None))
        return forward(*args, **kwargs)

    model.forward = recording_forward
    brain.init_optimizers()
    brain.modules.train()
    before = [p.detach().clone() for p in model.parameters()]
    loss = brain.fit_batch(_batch())
    assert seen and all(s == (dtype is not None, dtype) for s in seen), seen
    assert math.isfinite(float(loss))
    assert any((p.detach() - b).abs().max() > 0 for p, b in zip(model.parameters(), before))
