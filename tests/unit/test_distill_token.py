"""Token-level KD (TokenKL) against a hand computation; masking, item weights and errors."""

import math

import pytest
import torch

from slukd.distill import TokenKL


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_token_kl_hand(temp):
    zt, zs = [0.0, math.log(3.0)], [0.0, 0.0]
    ref = temp**2 * _kl(_softmax([v / temp for v in zt]), _softmax([v / temp for v in zs]))
    got = TokenKL(temp)(torch.tensor([[zs]]), torch.tensor([[zt]]), torch.tensor([[True]]))
    assert got.item() == pytest.approx(ref, rel=1e-5)
    if temp == 1.0:  # p_t = (1/4, 3/4), p_s = (1/2, 1/2)
        assert got.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-5)


def test_token_kl_mask():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    per = {
        (b, pos): _kl(_softmax(t[b, pos].tolist()), _softmax(s[b, pos].tolist())) for b in range(2) for pos in range(4)
    }
    m = TokenKL()
    real = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert m(s, t, mask).item() == pytest.approx(sum(per[k] for k in real) / 5, rel=1e-5)
    # padding content is irrelevant (even inf/NaN)
    s2, t2 = s.clone(), t.clone()
    s2[0, 3], t2[1, 2:] = float("nan"), float("inf")
    assert m(s2, t2, mask).item() == pytest.approx(m(s, t, mask).item(), rel=1e-6)
    assert m(s, t, torch.zeros(2, 4, dtype=torch.bool)).item() == 0.0  # no real position
    assert m(s, t).item() == pytest.approx(sum(per.values()) / 8, rel=1e-5)


def test_token_kl_zero_for_equal_and_gradient_only_to_student():
    s = torch.randn(2, 3, 7, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    m = TokenKL(2.0)
    assert m(s, t).item() == pytest.approx(0.0, abs=1e-6)
    loss = m(s, torch.randn(2, 3, 7).requires_grad_(True))
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    t2 = torch.randn(2, 3, 7, requires_grad=True)
    m(torch.randn(2, 3, 7, requires_grad=True), t2).backward()
    assert t2.grad is None


def test_token_kl_errors():
    m = TokenKL()
    with pytest.raises(ValueError, match="vocabular"):
        m(torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="same prefix"):
        m(torch.randn(2, 3, 5), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        m(torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        TokenKL(0.0)


def test_token_kl_noise_student_cannot_reach_the_minimum():
    """A student whose distributions ignore the input (one learned logit vector for every item and position) can
    only reach the KL to the teachers' average; a student equal to the teacher reaches 0."""
    torch.manual_seed(0)
    t = 3.0 * torch.randn(16, 6, 20)  # the teacher's item-dependent distributions (fixed targets)
    mask = torch.ones(16, 6, dtype=torch.bool)
    kl = TokenKL(2.0)
    bias = torch.zeros(20, requires_grad=True)
    opt = torch.optim.Adam([bias], lr=0.1)
    first = kl(bias.expand(16, 6, 20), t, mask).item()
    for _ in range(400):
        opt.zero_grad()
        loss = kl(bias.expand(16, 6, 20), t, mask)
        loss.backward()
        opt.step()
    assert loss.item() > 0.5 * first  # far from the minimum, however long it trains
    assert kl(t.clone(), t, mask).item() == pytest.approx(0.0, abs=1e-5)
