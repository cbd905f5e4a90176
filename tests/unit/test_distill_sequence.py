"""Sequence-level KD: the teacher-target cache (reuse, invalidation, crash safety, concurrent runs) and the CE
targets."""

import math
import multiprocessing as mp
from types import SimpleNamespace

import pytest
import torch

from slukd.distill import TeacherTargets, batch_ids, seq_targets, sequence_nll


class CountingTeacher:
    """A fake teacher: item "u7" -> hypothesis [7, 8] and embedding [7., -7.]; records which IDs it ran on; may
    crash on a batch."""

    def __init__(self, crash_on_call: int | None = None):
        self.calls, self.seen, self.crash_on_call = 0, [], crash_on_call

    def __call__(self, batch):
        self.calls += 1
        if self.crash_on_call is not None and self.calls == self.crash_on_call:
            raise RuntimeError("simulated crash")
        self.seen.extend(batch["id"])
        n = [int(i[1:]) for i in batch["id"]]
        return [[k, k + 1] for k in n], torch.tensor([[float(k), -float(k)] for k in n])


def _batches(n_items=10, bs=3):
    ids = [f"u{i}" for i in range(n_items)]
    return [{"id": ids[i : i + bs]} for i in range(0, n_items, bs)]


def test_cache_reused_after_restart(tmp_path):
    t = CountingTeacher()
    tt = TeacherTargets(tmp_path, "a" * 64, {"beam": 3}, hyps=True, emb=True)
    assert tt.ensure(_batches(), t) == {"computed": 10, "batches": 4} and t.calls == 4
    assert tt.hyps_of(["u3", "u0"]) == [[3, 4], [0, 1]]
    assert tt.emb_of(["u2"]).tolist() == [[2.0, -2.0]]
    assert tt.emb_mean().tolist() == [4.5, -4.5]
    assert tt.ensure(_batches(), t)["computed"] == 0 and t.calls == 4  # next epoch: no teacher pass
    t2 = CountingTeacher()
    tt2 = TeacherTargets(tmp_path, "a" * 64, {"beam": 3}, hyps=True, emb=True)  # "restart"
    assert tt2.missing([f"u{i}" for i in range(10)]) == [] and tt2.ensure(_batches(), t2)["computed"] == 0
    assert tt2.hyps_of([f"u{i}" for i in range(10)]) == tt.hyps_of([f"u{i}" for i in range(10)])
    # new items only: only the batch holding them runs the teacher
    assert tt2.ensure(_batches(12), t2)["computed"] == 2 and t2.seen == ["u9", "u10", "u11"]
    data = torch.load(tt2.path, weights_only=False)
    assert data["fingerprint"] == "a" * 64 and len(data["hyps"]) == 12 and data["config"] == {"beam": 3}


def test_cache_invalidated_when_teacher_or_settings_change(tmp_path):
    TeacherTargets(tmp_path, "a" * 64).ensure(_batches(), CountingTeacher())
    t = CountingTeacher()
    other = TeacherTargets(tmp_path, "b" * 64)
    assert other.missing(["u0"]) == ["u0"] and other.ensure(_batches(), t)["computed"] == 10 and t.calls == 4
    assert TeacherTargets(tmp_path, "a" * 64, {"beam": 5}).missing(["u0"]) == ["u0"]
    assert TeacherTargets(tmp_path, "a" * 64, {"precision": "bf16"}).missing(["u0"]) == ["u0"]
    assert len({p.name for p in tmp_path.glob("targets_*.pt")}) == 2
    # wanting embeddings too: items cached with hypotheses only are computed again
    assert TeacherTargets(tmp_path, "a" * 64, hyps=True, emb=True).missing(["u0"]) == ["u0"]


def test_crash_keeps_flushed_work(tmp_path):
    t = CountingTeacher(crash_on_call=3)
    tt = TeacherTargets(tmp_path, "c" * 64, flush_every=2)
    with pytest.raises(RuntimeError, match="simulated"):
        tt.ensure(_batches(), t)
    t2 = CountingTeacher()
    tt2 = TeacherTargets(tmp_path, "c" * 64)
    assert len(tt2.ready_ids([f"u{i}" for i in range(10)])) == 6
    assert tt2.ensure(_batches(), t2)["computed"] == 4 and t2.seen == ["u6", "u7", "u8", "u9"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def _fill(path, delay_s):
    import time

    def slow(batch):
        time.sleep(delay_s)
        return [[1]] * len(batch["id"]), None

    return TeacherTargets(path, "e" * 64, flush_every=1).ensure(_batches(6), slow)["computed"]


def test_two_runs_filling_one_cache_take_turns(tmp_path):
    """Two processes want the same targets: one computes them, the other waits on the lock and reuses them."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        counts = pool.starmap(_fill, [(tmp_path, 0.2), (tmp_path, 0.2)])
    assert sorted(counts) == [0, 6]


def test_target_cache_errors(tmp_path):
    tt = TeacherTargets(tmp_path, "d" * 64)
    with pytest.raises(ValueError, match="1 hypotheses for a batch of 3"):
        tt.ensure(_batches(), lambda b: ([[1]], None))
    with pytest.raises(ValueError, match="no embedding row per item"):
        TeacherTargets(tmp_path, "d" * 64, hyps=False, emb=True).ensure(_batches(), lambda b: (None, None))
    with pytest.raises(KeyError, match="'u1'"):
        TeacherTargets(tmp_path, "d" * 64, hyps=False, emb=True).emb_of(["u1"])
    assert tt.hyps_of(["u1"]) == [None]
    torch.save({"hyps": {}, "emb": {}, "fingerprint": "zzz"}, tt.path)
    with pytest.raises(ValueError, match="another teacher"):
        tt.reload()
    tt.path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"targets_.*unreadable"):
        tt.reload()
    with pytest.raises(ValueError, match="fingerprint"):
        TeacherTargets(tmp_path, "")


def test_batch_id_sources():
    from speechbrain.dataio.batch import PaddedBatch

    pb = PaddedBatch([{"id": "x1", "sig": torch.zeros(3)}, {"id": "x2", "sig": torch.zeros(2)}])
    assert batch_ids(pb) == ["x1", "x2"]
    assert batch_ids({"ids": [1, 2]}) == ["1", "2"]
    assert batch_ids(SimpleNamespace(ids=["c1"])) == ["c1"]
    with pytest.raises(ValueError, match="item IDs"):
        batch_ids({"wav": []})


def test_seq_targets_layout():
    t = seq_targets([[5, 6, 7], [8]], bos_index=1, eos_index=2, pad_index=0)
    assert t.tokens_bos.tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert t.tokens_eos.tolist() == [[5, 6, 7, 2], [8, 2, 0, 0]]
    assert t.tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert t.lens.tolist() == pytest.approx([1.0, 0.5])
    assert t.tokens_lens.tolist() == pytest.approx([1.0, 1 / 3])
    assert t.rows.tolist() == [0, 1]
    e = seq_targets([[]], bos_index=1, eos_index=2, pad_index=9)
    assert e.tokens_bos.tolist() == [[1]] and e.tokens_eos.tolist() == [[2]] and e.tokens.shape == (1, 0)


def test_sequence_nll_hand_and_padding():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]])
    lp = probs.log()
    targets = torch.tensor([[1, 2], [2, 0]])  # item 1's second position is padding (pad_index 0)
    ref = -(math.log(0.25) + math.log(0.1) + math.log(0.6)) / 3
    assert sequence_nll(lp, targets, pad_index=0).item() == pytest.approx(ref, rel=1e-6)
    assert sequence_nll(lp, targets, lens=torch.tensor([1.0, 0.5])).item() == pytest.approx(ref, rel=1e-6)
    assert sequence_nll(lp[1:], targets[1:], pad_index=0).item() == pytest.approx(-math.log(0.6), rel=1e-6)
    assert sequence_nll(lp, targets, lens=torch.zeros(2)).item() == 0.0
    eps = 0.1
    ls = (1 - eps) * -math.log(0.6) - eps * sum(math.log(p) for p in [0.2, 0.2, 0.6]) / 3
    got = sequence_nll(lp[1:], targets[1:], pad_index=0, label_smoothing=eps)
    assert got.item() == pytest.approx(ls, rel=1e-6)


def test_seq_kd_noise_student_cannot_reach_the_minimum():
    """CE on the teacher's hypotheses: a student that ignores the audio (one learned distribution per position)
    cannot go below the entropy of the hypotheses' tokens; one that follows the audio reaches ~0."""
    torch.manual_seed(0)
    hyps = torch.randint(3, 12, (32, 5))  # item-dependent hypotheses (no padding)
    logits = torch.zeros(5, 12, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(400):
        opt.zero_grad()
        loss = sequence_nll(logits.log_softmax(-1).expand(32, 5, 12), hyps, pad_index=0)
        loss.backward()
        opt.step()
    counts = torch.stack([torch.bincount(hyps[:, p], minlength=12) for p in range(5)]).float() / 32
    floor = -(counts[counts > 0] * counts[counts > 0].log()).sum() / 5  # mean per-position entropy
    assert loss.item() >= floor.item() - 1e-3 and floor.item() > 1.5
    informed = torch.nn.functional.one_hot(hyps, 12).float().mul(20).log_softmax(-1)  # knows each item's hypothesis
    assert sequence_nll(informed, hyps, pad_index=0).item() < 1e-6
