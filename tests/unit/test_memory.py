"""Rehearsal memory: budgets, random and herding selection, updates across tasks, persistence."""

from __future__ import annotations

import json

import pytest
import torch

from slukd.config import HparamValueError
from slukd.continual.memory import RehearsalMemory, herding_order, memory_budget
from slukd.continual.scenario import make_scenario


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
    mem = RehearsalMemory("random", fraction=0.1, total_items=120, seed=0, rule="shared_budget")  # 12 items in all
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
    mem = RehearsalMemory("random", fraction=0.5, total_items=8, seed=2, rule="shared_budget")
    ids, labels = _items(["a", "b"], 4)
    mem.update(ids, labels)
    p = mem.save(tmp_path / "memory.json")
    back = RehearsalMemory.load(p)
    assert back.ids() == mem.ids() and back.budget == 4 and back.rule == "shared_budget"
    fixed = RehearsalMemory("random", fraction=0.5, total_items=8, seed=2, n_classes=4)
    fixed.update(ids, labels)
    back = RehearsalMemory.load(fixed.save(tmp_path / "fixed.json"))
    assert (back.rule, back.quota, back.budget, back.ids()) == ("fixed_quota", 1, 4, fixed.ids())
    # a file written before the rule existed: a fraction meant the shared budget
    old = {k: v for k, v in mem.state_dict().items() if k not in ("rule", "n_classes")}
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    assert RehearsalMemory.load(tmp_path / "old.json").rule == "shared_budget"
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        RehearsalMemory.load(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------- the two budget rules
# Hand examples at the paper's scale: 1% of 126,000 training items = 1260, 18 scenarios in the corpus.
#   fixed_quota:   quota = floor(0.01 * 126000 / 18) = 70 per scenario, whatever has been seen;
#   shared_budget: 1260 shared by the scenarios seen so far: SLURP-3 after task 1 (6 seen) 210 each, after task 2
#                  (12 seen) 105 each; SLURP-6 after task 1 (3 seen) 420 each, after task 2 (6 seen) 210 each.
HAND = {
    ("slurp3", "fixed_quota"): [70, 70],
    ("slurp3", "shared_budget"): [210, 105],
    ("slurp6", "fixed_quota"): [70, 70],
    ("slurp6", "shared_budget"): [420, 210],
}


@pytest.mark.parametrize("split,rule", sorted(HAND))
def test_both_rules_by_hand_on_the_slurp_orders(split, rule):
    scenario = make_scenario(split, "fixed", 0)
    mem = RehearsalMemory("random", fraction=0.01, total_items=126_000, seed=0, rule=rule,
                          n_classes=len(scenario.classes))  # fmt: skip
    assert len(scenario.classes) == 18
    for t in range(2):
        ids, labels = _items(scenario.tasks[t], 500)
        mem.update(ids, labels, task=t)
        seen = [c for task in scenario.tasks[: t + 1] for c in task]
        sizes = {c: len(v) for c, v in mem.classes.items()}
        assert sizes == {c: HAND[split, rule][t] for c in seen}, (t, sizes)
        assert mem.summary()["per_class"] == sizes and mem.summary()["total"] == len(seen) * HAND[split, rule][t]
    if rule == "fixed_quota":  # never more than the paper's 1% once every scenario is seen
        assert mem.quota == 70 and mem.budget == 1260 == mem.summary()["capacity"]
    else:
        assert mem.quota is None and mem.budget == 1260


def test_fixed_quota_never_lends_room_and_never_shrinks():
    # 0.5 * 40 / 4 classes = 5 per class; the first task's 2 classes get 5 each (not 10), keep them after task 2
    mem = RehearsalMemory("random", fraction=0.5, total_items=40, n_classes=4, seed=3)
    ids, labels = _items(["a", "b"], 10)
    mem.update(ids, labels, task=0)
    first = {c: list(v) for c, v in mem.classes.items()}
    assert {c: len(v) for c, v in first.items()} == {"a": 5, "b": 5}
    ids, labels = _items(["c", "d"], 10)
    mem.update(ids, labels, task=1)
    assert mem.classes["a"] == first["a"] and mem.classes["b"] == first["b"]  # same items, same number
    assert len(mem) == 20 == mem.budget
    # floor, not round: 0.01 * 2200 / 18 = 1.22 -> 1 per scenario on the demo corpus
    assert RehearsalMemory("random", fraction=0.01, total_items=2200, n_classes=18).quota == 1


def test_memory_budget_rules_and_errors():
    mem = memory_budget("random", None, 0.01, 126_000, 0, rule="fixed_quota", n_classes=18)
    assert mem.quota == 70
    assert memory_budget("random", 4, None, 100, 0).quotas(["x", "y"]) == {"x": 4, "y": 4}
    assert memory_budget("none", None, 0.01, 100, 0) is None
    with pytest.raises(HparamValueError, match="memory_rule: shared_budget .*memory_fraction is null"):
        memory_budget("random", 4, None, 100, 0, rule="shared_budget")
    with pytest.raises(HparamValueError, match="memory_rule: 'other'"):
        memory_budget("random", None, 0.01, 100, 0, rule="other", n_classes=4)
    with pytest.raises(ValueError, match="needs n_classes"):
        RehearsalMemory("random", fraction=0.01, total_items=100)
