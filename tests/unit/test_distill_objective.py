"""KD objective: memory alpha (SLU paper) and plain sum (captioning paper)."""

import math

import pytest
import torch

from slukd.distill import KDObjective, memory_alpha


def test_memory_alpha():
    assert memory_alpha(torch.tensor([True, False, False, False])).item() == pytest.approx(0.5)
    assert memory_alpha(torch.tensor([1, 1, 0, 0, 0, 0, 0, 0])).item() == pytest.approx(math.sqrt(2 / 8))
    assert memory_alpha(torch.zeros(5, dtype=torch.bool)).item() == 0.0
    assert memory_alpha(torch.ones(3, dtype=torch.bool)).item() == 1.0
    with pytest.raises(ValueError, match="empty"):
        memory_alpha(torch.zeros(0, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        memory_alpha(torch.tensor([0.5, 1.0]))


def test_alpha_mode_hand():
    obj = KDObjective({"audio": 2.0, "seq": 1.0, "tok": 0.0}, mode="alpha")
    sup = torch.tensor(3.0, requires_grad=True)
    audio, seq = torch.tensor(0.5, requires_grad=True), torch.tensor(1.5)
    is_mem = torch.tensor([True, False, False, False])  # alpha = 0.5
    total, parts = obj(sup, {"audio": audio, "seq": seq}, is_memory=is_mem)
    assert total.item() == pytest.approx(0.5 * 3.0 + 0.5 * (2.0 * 0.5 + 1.5))
    assert parts == pytest.approx({"sup": 3.0, "kd_audio": 0.5, "kd_seq": 1.5, "alpha": 0.5, "total": 2.75})
    assert all(isinstance(v, float) for v in parts.values())
    total.backward()
    assert sup.grad.item() == pytest.approx(0.5) and audio.grad.item() == pytest.approx(1.0)
    # no memory item in the batch: the supervised loss alone
    total, _ = obj(sup, {"audio": audio, "seq": seq}, is_memory=torch.zeros(4, dtype=torch.bool))
    assert total.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="is_memory"):
        obj(sup, {"audio": audio, "seq": seq})


def test_sum_mode_and_term_checks():
    obj = KDObjective({"contrastive": 1.0, "seq": 0.5}, mode="sum")
    total, parts = obj(torch.tensor(1.0), {"contrastive": torch.tensor(2.0), "seq": torch.tensor(4.0)})
    assert total.item() == pytest.approx(1.0 + 2.0 + 2.0)
    assert "alpha" not in parts and parts["total"] == pytest.approx(5.0)
    assert obj.active("seq") and not obj.active("tok")
    with pytest.raises(KeyError, match="typo"):
        obj(torch.tensor(1.0), {"contrastive": torch.tensor(1.0), "seq": torch.tensor(1.0), "typo": torch.tensor(1.0)})
    with pytest.raises(KeyError, match="seq"):
        obj(torch.tensor(1.0), {"contrastive": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="mode"):
        KDObjective({}, mode="mean")
    with pytest.raises(ValueError, match="weight 'x'"):
        KDObjective({"x": -1})
    # no KD terms configured: total = sup
    assert KDObjective().__call__(torch.tensor(2.0))[0].item() == 2.0


def test_built_from_hyperpyyaml():
    from hyperpyyaml import load_hyperpyyaml

    hp = load_hyperpyyaml("kd: !new:slukd.distill.KDObjective\n  mode: alpha\n  weights: {audio: 1.0, seq: 0.5}\n")
    obj = hp["kd"]
    assert obj.mode == "alpha" and obj.weights == {"audio": 1.0, "seq": 0.5}
    total, _ = obj(torch.tensor(1.0), {"audio": torch.tensor(2.0), "seq": torch.tensor(2.0)}, alpha=1.0)
    assert total.item() == pytest.approx(3.0)
