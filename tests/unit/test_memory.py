"""Rehearsal memory: budgets, random and herding selection, updates across tasks, persistence."""

from __future__ import annotations

import pytest
import torch

from slukd.continual.memory import RehearsalMemory, herding_order


def _items(classes, n):
    ids = [f"{c}{i}" for c in classes for i in range(n)]
    labels = [c for c in classes for _ in range(n)]
    return ids, labels


def test_per_class_quota_grows_with_classes():
    mem = RehearsalMemory("random", per_class=3, seed=1)
    ids, labels = _items(["a", "b"], 10)
    mem.update(ids, labels, task=0)
    assert {c: len(v) for c, v in mem.classes.items()} == {"a": 3, "b": 3}
    ids2, labels2 = _items(["c"], 2)
    mem.update(ids2, labels2, task=1)
    assert {c: len(v) for c, v in mem.classes.items()} == {"a": 3, "b": 3, "c": 2}
    assert len(mem) == 8


def test_fraction_budget_is_shared_and_balanced_across_tasks():
    mem = RehearsalMemory("random", fraction=0.1, total_items=120, seed=0)  # 12 items in all
    assert mem.budget == 12
    ids, labels = _items(["a", "b"], 20)
    mem.update(ids, labels, task=0)
    assert {c: len(v) for c, v in mem.classes.items()} == {"a": 6, "b": 6}
    before = dict(mem.classes)
    ids2, labels2 = _items(["c", "d", "e"], 20)
    mem.update(ids2, labels2, task=1)
    sizes = {c: len(v) for c, v in mem.classes.items()}
    assert sum(sizes.values()) == 12
    assert max(sizes.values()) - min(sizes.values()) <= 1
    # shrinking keeps the best (first) exemplars of the old classes
    assert mem.classes["a"] == before["a"][: sizes["a"]]


def test_random_selection_is_seeded():
    ids, labels = _items(["a"], 50)
    m1 = RehearsalMemory("random", per_class=5, seed=7)
    m2 = RehearsalMemory("random", per_class=5, seed=7)
    m3 = RehearsalMemory("random", per_class=5, seed=8)
    for m in (m1, m2, m3):
        m.update(ids, labels)
    assert m1.ids() == m2.ids()
    assert m1.ids() != m3.ids()


def test_herding_hand_case():
    # Normalised rows (unit vectors): a=(1,0), b=(0,1), c=(0.6,0.8), d=(0,-1), e=(-1,0); class mean mu=(0.12,0.16).
    # Every step has a unique answer (the margins are >= 0.03, far from floating-point ties):
    # 1: |mu - x|^2 = 1 + |mu|^2 - 2 x.mu, x.mu = a .12, b .16, c .20, d -.16, e -.12  -> c
    # 2: |mu - (c + x)/2|^2: a .52, b .58, d .10, e .16                                 -> d
    # 3: |mu - (c + d + x)/3|^2: a .222, b .018, e .116                                  -> b
    # 4: |mu - (c + d + b + x)/4|^2: a .080, e .050                                      -> e, then a
    f = torch.tensor([[2.0, 0.0], [0.0, 3.0], [3.0, 4.0], [0.0, -0.5], [-7.0, 0.0]])  # a, b, c, d, e (unnormalised)
    assert herding_order(f, 2) == [2, 3]
    assert herding_order(f) == [2, 3, 1, 4, 0]


def test_herding_picks_items_closest_to_mean():
    torch.manual_seed(0)
    centre = torch.tensor([1.0, 0.0, 0.0])
    near = centre + 0.01 * torch.randn(3, 3)
    far = torch.randn(20, 3) * 3
    feats = torch.cat([far[:10], near, far[10:]])
    mem = RehearsalMemory("herding", per_class=1)
    ids = [str(i) for i in range(len(feats))]
    mem.update(ids, ["a"] * len(ids), features=feats)
    # the first pick is the normalised row closest to the normalised class mean
    x = torch.nn.functional.normalize(feats, dim=1)
    expected = int(torch.argmin(((x - x.mean(0)) ** 2).sum(1)))
    assert mem.ids() == [str(expected)]


def test_herding_needs_features_and_errors():
    mem = RehearsalMemory("herding", per_class=2)
    with pytest.raises(ValueError, match="needs the candidates' features"):
        mem.update(["x"], ["a"])
    with pytest.raises(ValueError, match="exactly one"):
        RehearsalMemory("random")
    with pytest.raises(ValueError, match="duplicate"):
        RehearsalMemory("random", per_class=1).update(["x", "x"], ["a", "a"])


def test_save_and_load(tmp_path):
    mem = RehearsalMemory("random", fraction=0.5, total_items=8, seed=2)
    ids, labels = _items(["a", "b"], 4)
    mem.update(ids, labels)
    p = mem.save(tmp_path / "memory.json")
    back = RehearsalMemory.load(p)
    assert back.ids() == mem.ids() and back.budget == 4
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        RehearsalMemory.load(tmp_path / "bad.json")
