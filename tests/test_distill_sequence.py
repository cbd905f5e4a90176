"""Sequence-level KD: the pseudo-label cache (reuse, invalidation, crash safety) and the CE targets."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from slukd.distill import PseudoLabeler, SeqKDTargets, batch_ids, seq_targets, sequence_nll


class CountingDecoder:
    """A fake teacher beam search: item "u7" -> [7, 8]; records which IDs it decoded; may crash on a batch."""

    def __init__(self, crash_on_call: int | None = None):
        self.calls, self.seen, self.crash_on_call = 0, [], crash_on_call

    def __call__(self, batch):
        self.calls += 1
        if self.crash_on_call is not None and self.calls == self.crash_on_call:
            raise RuntimeError("simulated crash")
        self.seen.extend(batch["id"])
        return [[int(i[1:]), int(i[1:]) + 1] for i in batch["id"]]


def _batches(n_items=10, bs=3):
    ids = [f"u{i}" for i in range(n_items)]
    return [{"id": ids[i : i + bs]} for i in range(0, n_items, bs)]


def test_cache_reused_after_restart(tmp_path):
    dec = CountingDecoder()
    pl = PseudoLabeler(dec, tmp_path, fingerprint="a" * 64, config={"beam": 3})
    stats = pl.ensure(_batches())
    assert stats == {"decoded": 10, "cached": 0, "batches_decoded": 4} and dec.calls == 4
    assert pl.get(["u3", "u0"]) == [[3, 4], [0, 1]]
    assert pl.ensure(_batches())["decoded"] == 0 and dec.calls == 4  # next epoch: no decoding
    dec2 = CountingDecoder()
    pl2 = PseudoLabeler(dec2, tmp_path, fingerprint="a" * 64, config={"beam": 3})  # "restart"
    assert len(pl2) == 10 and pl2.ensure(_batches())["decoded"] == 0 and dec2.calls == 0
    assert pl2.get([f"u{i}" for i in range(10)]) == pl.get([f"u{i}" for i in range(10)])
    # new items only: only the batch holding them is decoded
    assert pl2.ensure(_batches(12))["decoded"] == 2 and dec2.seen == ["u9", "u10", "u11"]
    data = json.loads(pl2.path.read_text())
    assert data["fingerprint"] == "a" * 64 and data["n"] == 12 and data["config"] == {"beam": 3}


def test_cache_invalidated_when_teacher_or_config_changes(tmp_path):
    PseudoLabeler(CountingDecoder(), tmp_path, fingerprint="a" * 64).ensure(_batches())
    dec = CountingDecoder()
    other = PseudoLabeler(dec, tmp_path, fingerprint="b" * 64)
    assert len(other) == 0 and other.ensure(_batches())["decoded"] == 10 and dec.calls == 4
    dec3 = CountingDecoder()
    beam5 = PseudoLabeler(dec3, tmp_path, fingerprint="a" * 64, config={"beam": 5})
    assert len(beam5) == 0
    assert len({p.name for p in tmp_path.glob("pseudo_*.json")}) == 2


def test_crash_keeps_flushed_work(tmp_path):
    dec = CountingDecoder(crash_on_call=3)
    pl = PseudoLabeler(dec, tmp_path, fingerprint="c" * 64, flush_every=2)
    with pytest.raises(RuntimeError, match="simulated"):
        pl.ensure(_batches())
    dec2 = CountingDecoder()
    pl2 = PseudoLabeler(dec2, tmp_path, fingerprint="c" * 64)
    assert len(pl2) == 6
    assert pl2.ensure(_batches())["decoded"] == 4 and dec2.seen == ["u6", "u7", "u8", "u9"]
    assert not list(tmp_path.glob("*.tmp"))


def test_labeler_errors(tmp_path):
    pl = PseudoLabeler(lambda b: [[1]], tmp_path, fingerprint="d" * 64)
    with pytest.raises(ValueError, match="1 hypotheses for a batch of 3"):
        pl.ensure(_batches())
    with pytest.raises(KeyError, match="'u1'"):
        pl.get(["u1"])
    assert pl.get(["u1"], default=None) == [None]
    pl.path.write_text('{"labels": {"u1": [1]}, "fingerprint": "zzz"}')
    with pytest.raises(ValueError, match="another teacher"):
        pl.reload()
    pl.path.write_text('{"labels": \n oops')
    with pytest.raises(ValueError, match=r"pseudo_.*line 2"):
        pl.reload()
    with pytest.raises(ValueError, match="fingerprint"):
        PseudoLabeler(None, tmp_path, fingerprint="")
    with pytest.raises(ValueError, match="invalid label for item 'u0'"):
        PseudoLabeler(lambda b: [object()] * 3, tmp_path / "x", fingerprint="e").ensure(_batches(3))


def test_text_labels_and_batch_id_sources(tmp_path):
    pl = PseudoLabeler(lambda b: [f"caption of {i}" for i in b.ids], tmp_path, fingerprint="f" * 64)
    pl.ensure([SimpleNamespace(ids=["c1", "c2"])])
    assert PseudoLabeler(None, tmp_path, fingerprint="f" * 64).get(["c2"]) == ["caption of c2"]
    from speechbrain.dataio.batch import PaddedBatch

    pb = PaddedBatch([{"id": "x1", "sig": torch.zeros(3)}, {"id": "x2", "sig": torch.zeros(2)}])
    assert batch_ids(pb) == ["x1", "x2"]
    assert batch_ids({"ids": [1, 2]}) == ["1", "2"]
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


def test_seqkd_merge_policies():
    gold, pseudo = [[3, 3], [4], [5, 5, 5]], [None, [9, 9], None]
    rep = SeqKDTargets("replace", 1, 2).merge(gold, pseudo)
    assert rep["sup"].tokens.tolist() == [[3, 3, 0], [9, 9, 0], [5, 5, 5]]
    assert rep["is_pseudo"].tolist() == [False, True, False]
    add = SeqKDTargets("add", 1, 2).merge(gold, pseudo)
    assert add["sup"].tokens.tolist() == [[3, 3, 0], [4, 0, 0], [5, 5, 5]]
    assert add["seq_kd"].rows.tolist() == [1] and add["seq_kd"].tokens_eos.tolist() == [[9, 9, 2]]
    assert "seq_kd" not in SeqKDTargets("add", 1, 2).merge(gold, [None] * 3)
    assert SeqKDTargets("gold", 1, 2).merge(gold, pseudo)["sup"].tokens.tolist()[1] == [4, 0, 0]
    txt = SeqKDTargets("replace", 1, 2, encode_fn=lambda s: [len(w) for w in s.split()]).merge([[3]], ["ab cde"])
    assert txt["sup"].tokens.tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="encode_fn"):
        SeqKDTargets("replace", 1, 2).merge([[3]], ["text"])
    with pytest.raises(ValueError, match="batch size"):
        SeqKDTargets("add", 1, 2).merge(gold, pseudo[:2])
    with pytest.raises(ValueError, match="mode"):
        SeqKDTargets("both", 1, 2)


def test_sequence_nll_hand_and_padding():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]])
    lp = probs.log()
    targets = torch.tensor([[1, 2], [2, 0]])  # item 1's second position is padding (pad_index 0)
    ref = -(math.log(0.25) + math.log(0.1) + math.log(0.6)) / 3
    assert sequence_nll(lp, targets, pad_index=0).item() == pytest.approx(ref, rel=1e-6)
    assert sequence_nll(lp, targets, lens=torch.tensor([1.0, 0.5])).item() == pytest.approx(ref, rel=1e-6)
    w = torch.tensor([0.0, 1.0])
    assert sequence_nll(lp, targets, pad_index=0, item_weight=w).item() == pytest.approx(-math.log(0.6), rel=1e-6)
    assert sequence_nll(lp, targets, pad_index=0, item_weight=torch.zeros(2)).item() == 0.0
    eps = 0.1
    ls = (1 - eps) * -math.log(0.6) - eps * sum(math.log(p) for p in [0.2, 0.2, 0.6]) / 3
    got = sequence_nll(lp, targets, pad_index=0, item_weight=w, label_smoothing=eps)
    assert got.item() == pytest.approx(ls, rel=1e-6)
