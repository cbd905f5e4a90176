"""Evaluation under DDP is sharded: each process decodes every world-th batch only, and the parts are gathered."""

import pytest
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes

import slukd.train.decode as D
from slukd.models import Seq2Seq

LOADED: list[str] = []  # keys whose audio was loaded


def _dataset(n: int) -> DynamicItemDataset:
    g = torch.Generator().manual_seed(0)
    waves = {f"u{i}": torch.randn(1600 + 160 * i, generator=g) for i in range(n)}
    ds = DynamicItemDataset({k: {"k": k} for k in waves})

    @takes("k")
    @provides("sig")
    def sig(k):
        LOADED.append(k)
        return waves[k]

    ds.add_dynamic_item(sig)
    ds.set_output_keys(["id", "sig"])
    return ds


@pytest.mark.parametrize("rank", [0, 1])
def test_each_process_decodes_its_share_and_the_parts_are_gathered(rank, monkeypatch):
    torch.manual_seed(0)
    model = Seq2Seq(12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, d_ffn=32)
    ds = _dataset(10)
    full = D.decode_dataset(model, ds, batch_size=2, max_len=3, progress=False, shard=False)  # 5 batches
    seen: list[int] = []
    monkeypatch.setattr(D, "rank_and_world", lambda: (rank, 2))

    def gather(parts, mine):  # what all_gather_object gives: every process's dict
        parts[rank] = mine
        parts[1 - rank] = {i: h for i, h in full.items() if i not in mine}

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    LOADED.clear()
    out = D.decode_dataset(model, ds, batch_size=2, max_len=3, progress=False, on_batch=seen.append)
    assert len(seen) == (3 if rank == 0 else 2)  # batches 0, 2, 4 on rank 0; 1, 3 on rank 1
    mine = [f"u{i}" for b in range(rank, 5, 2) for i in (2 * b, 2 * b + 1)]
    assert sorted(LOADED) == sorted(mine)  # the other process's audio is never loaded here
    assert out == full
