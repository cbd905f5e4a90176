"""Bucketed random batches: every item once per epoch, similar lengths in a batch, a function of (seed, epoch),
an even split across DDP processes."""

from __future__ import annotations

import random

import slukd.train.sampling as sampling
from slukd.train.sampling import BucketedRandomSampler


def _durations(n=1003, seed=0):
    rng = random.Random(seed)
    return [rng.uniform(0.5, 3.0) for _ in range(n)]


def test_every_item_once_with_little_padding():
    d = _durations()
    s = BucketedRandomSampler(d, batch_size=8, seed=1)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(d))) and len(batches) == len(s)

    def waste(bs):
        return sum(max(d[i] for i in b) * len(b) for b in bs) / sum(d)

    rng = random.Random(3)
    perm = list(range(len(d)))
    rng.shuffle(perm)
    random_batches = [perm[k : k + 8] for k in range(0, len(perm), 8)]
    assert waste(batches) < 1.05 < 1.25 < waste(random_batches)


def test_order_is_a_function_of_seed_and_epoch():
    d = _durations()
    a, b = BucketedRandomSampler(d, 8, seed=1), BucketedRandomSampler(d, 8, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(BucketedRandomSampler(d, 8, seed=2)) != list(BucketedRandomSampler(d, 8, seed=1))


def test_processes_get_disjoint_shares_and_the_same_number_of_steps(monkeypatch):
    d = _durations(101)
    shares = []
    for rank in range(3):
        monkeypatch.setattr(sampling, "rank_and_world", lambda r=rank: (r, 3))
        s = BucketedRandomSampler(d, 8, seed=0)
        shares.append(list(s))
        assert len(shares[-1]) == len(s) == 5  # 13 batches -> 5 each (two repeated)
    seen = [i for share in shares for b in share for i in b]
    assert set(seen) == set(range(101))
