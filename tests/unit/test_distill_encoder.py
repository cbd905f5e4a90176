"""Encoder-level KD: masked pooling, EncoderMSE and EncoderContrastive against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from slukd.distill import EncoderContrastive, EncoderMSE, frame_mask, masked_mean


def _pad(x: torch.Tensor, extra: int, fill: float = float("nan")) -> torch.Tensor:
    """Append ``extra`` padding frames (NaN by default: padding must never be read)."""
    b, _, d = x.shape
    return torch.cat([x, torch.full((b, extra, d), fill)], dim=1)


# ---------------------------------------------------------------- masked_mean


def test_masked_mean_hand():
    x = torch.tensor(
        [[[1.0, 10.0], [3.0, 20.0], [5.0, 30.0], [7.0, 40.0]], [[2.0, 0.0], [4.0, 2.0], [99, 99], [99, 99]]]
    )
    out = masked_mean(x, torch.tensor([1.0, 0.5]))
    assert torch.allclose(out, torch.tensor([[4.0, 25.0], [3.0, 1.0]]))


def test_frame_mask_rounding_and_minimum():
    # round(0.3 * 4) = 1, round(0.6 * 4) = 2 (2.4), round(0.01 * 4) = 0 -> at least 1
    m = frame_mask(torch.tensor([0.3, 0.6, 0.01, 1.0]), 4, 4)
    assert m.sum(1).tolist() == [1, 2, 1, 4]
    assert m[1].tolist() == [True, True, False, False]


def test_masked_mean_padding_invariance_values_and_grads():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 4)
    n = torch.tensor([5, 3, 1])
    ref = torch.stack([x[b, : n[b]].mean(0) for b in range(3)])
    x_pad = _pad(x, 7).requires_grad_(True)
    out = masked_mean(x_pad, n.float() / 12)
    assert torch.allclose(out, ref, atol=1e-6)
    out.sum().backward()
    assert torch.all(x_pad.grad[:, 5:] == 0)
    assert torch.isfinite(x_pad.grad).all()
    assert torch.allclose(x_pad.grad[1, :3], torch.full((3, 4), 1 / 3))


def test_masked_mean_none_is_plain_mean():
    x = torch.randn(2, 3, 4)
    assert torch.allclose(masked_mean(x, None), x.mean(1))


@pytest.mark.parametrize(
    "lens, match",
    [([0.0, 1.0], r"\(0, 1\]"), ([1.2, 1.0], r"\(0, 1\]"), ([1.0], r"shape \[B\]"), ([1, 1], "relative")],
)
def test_masked_mean_bad_lengths(lens, match):
    with pytest.raises((ValueError, TypeError), match=match):
        masked_mean(torch.randn(2, 3, 4), torch.tensor(lens))


def test_masked_mean_bad_shape():
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        masked_mean(torch.randn(2, 3), torch.ones(2))


# ---------------------------------------------------------------- EncoderMSE


def test_mse_hand_no_projection():
    m = EncoderMSE(2, 2)
    assert not list(m.parameters())
    s = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    t = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])
    # per item: (1 + 4) / 2 = 2.5 and (4 + 9) / 2 = 6.5
    assert m(s, t).item() == pytest.approx(4.5)
    assert m(s[1:], t[1:]).item() == pytest.approx(6.5)


def test_mse_projection_hand():
    m = EncoderMSE(3, 5)
    assert m.student_proj.weight.shape == (5, 3) and isinstance(m.teacher_proj, torch.nn.Identity)
    with torch.no_grad():
        m.student_proj.weight.copy_(torch.randn(5, 3))
        m.student_proj.bias.copy_(torch.randn(5))
    s, t = torch.randn(2, 6, 3), torch.randn(2, 8, 5)
    sl, tl = torch.tensor([1.0, 0.5]), torch.tensor([0.75, 1.0])
    s_vec = torch.stack([s[0].mean(0), s[1, :3].mean(0)])
    t_vec = torch.stack([t[0, :6].mean(0), t[1].mean(0)])
    ref = F.mse_loss(m.student_proj(s_vec), t_vec)  # the teacher side is the fixed target, never projected
    assert torch.allclose(m(s, t, sl, tl), ref, atol=1e-6)


def test_mse_head_starts_at_the_uninformed_prediction():
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])
    m = EncoderMSE(3, 5, target_mean=mean)
    assert torch.all(m.student_proj.weight == 0) and torch.equal(m.student_proj.bias, mean)
    assert torch.equal(m.student_proj(torch.randn(4, 3)), mean.expand(4, 5))
    with pytest.raises(ValueError, match="teacher's space"):
        EncoderMSE(3, 5, proj_dim=4)
    with pytest.raises(ValueError, match="target_mean has 2 values"):
        EncoderMSE(3, 5, target_mean=torch.zeros(2))


def _fit_mse(make_student, loss_fn, steps: int, lr: float = 0.05) -> tuple[float, float]:
    """Train ``loss_fn``'s parameters (and nothing else) for ``steps`` AdamW steps with weight decay on a fixed
    set of teacher embeddings; returns (first loss, mean of the last 20 losses)."""
    opt = torch.optim.AdamW(loss_fn.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for step in range(steps):
        s, t = make_student(step)
        loss = loss_fn(s, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], sum(losses[-20:]) / 20


def test_mse_noise_student_cannot_lower_the_loss_but_a_student_equal_to_the_teacher_can():
    """The distillation target is fixed: a frozen student that outputs pure noise (no information about the
    clip) cannot drive the MSE term down by more than a few percent, while a student equal to the teacher reaches
    ~0. With both sides projected and trainable (the captioning paper's code) the same noise student collapses it."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(256, 16, generator=g) * 0.5 + torch.linspace(-2, 2, 16)  # 256 clips, a clear mean
    batches = [torch.randint(0, 256, (32,), generator=g) for _ in range(400)]

    def noise(step):
        return torch.randn(32, 1, 24), teacher[batches[step]]

    def same(step):
        t = teacher[batches[step]]
        return torch.cat([t, torch.zeros(32, 8)], dim=1).unsqueeze(1), t  # the teacher's features (and 8 zeros)

    floor = ((teacher - teacher.mean(0)) ** 2).mean().item()  # the MSE of the best uninformed prediction
    first, last = _fit_mse(noise, EncoderMSE(24, 16, target_mean=teacher.mean(0)), 400)
    assert last > 0.95 * first and last > 0.9 * floor
    _, last_same = _fit_mse(same, EncoderMSE(24, 16, target_mean=teacher.mean(0)), 400)
    assert last_same < 0.05 * floor

    class BothProjected(torch.nn.Module):  # what the fix removed: a trainable head on the teacher side too
        def __init__(self):
            super().__init__()
            self.s, self.t = torch.nn.Linear(24, 16), torch.nn.Linear(16, 16)

        def forward(self, s, t):
            return F.mse_loss(self.s(s.mean(1)), self.t(t))

    first_both, last_both = _fit_mse(noise, BothProjected(), 400)
    assert last_both < 0.3 * first_both  # collapses without the student learning anything


def test_mse_padding_invariance():
    torch.manual_seed(3)
    m = EncoderMSE(4, 6)
    with torch.no_grad():
        m.student_proj.weight.normal_()
    s, t = torch.randn(3, 5, 4), torch.randn(3, 7, 6)
    ref = m(s, t)
    got = m(_pad(s, 4), _pad(t, 2, fill=1e6), torch.full((3,), 5 / 9), torch.full((3,), 7 / 9))
    assert torch.allclose(ref, got, atol=1e-6)


def test_mse_framewise():
    m = EncoderMSE(2, 2, pool=False)
    s = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [50.0, 50.0]]])
    t = torch.zeros(1, 3, 2)
    # valid frames: round(2/3 * 3) = 2 -> mean of (1, 4) = 2.5
    assert m(s, t, torch.tensor([2 / 3])).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="equal time axes"):
        m(torch.randn(1, 3, 2), torch.randn(1, 4, 2))


def test_mse_dimension_errors():
    m = EncoderMSE(3, 5)
    with pytest.raises(ValueError, match="student_dim=3"):
        m(torch.randn(2, 4, 4), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="batch sizes differ"):
        m(torch.randn(2, 4, 3), torch.randn(3, 4, 5))


# ---------------------------------------------------------------- EncoderContrastive


def _ce(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(v) for v in row))


def test_contrastive_hand():
    m = EncoderContrastive(2, 2, temperature=0.5, learn_temperature=False)
    s = torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])  # normalised: e1, e2
    t = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # normalised: e1, (e1 + e2) / sqrt 2
    r = 1 / math.sqrt(2)
    logits = [[1 / 0.5, r / 0.5], [0.0, r / 0.5]]  # s_i . t_j / tau
    cols = [[logits[0][0], logits[1][0]], [logits[0][1], logits[1][1]]]
    ref = 0.5 * ((_ce(logits[0], 0) + _ce(logits[1], 1)) / 2 + (_ce(cols[0], 0) + _ce(cols[1], 1)) / 2)
    assert m(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert torch.allclose(m.logits(s, t), torch.tensor(logits), atol=1e-5)


def test_contrastive_lowest_for_aligned_pairs_and_symmetric():
    torch.manual_seed(4)
    m = EncoderContrastive(8, 8)
    t = torch.randn(6, 5, 8)
    aligned = m(t.clone(), t)
    shuffled = m(t[torch.tensor([1, 2, 3, 4, 5, 0])], t)
    random_s = m(torch.randn(6, 5, 8), t)
    assert aligned < shuffled and aligned < random_s
    s = torch.randn(6, 5, 8)
    assert torch.allclose(m(s, t), m(t, s), atol=1e-6)


def test_contrastive_padding_invariance():
    torch.manual_seed(5)
    m = EncoderContrastive(4, 6, proj_dim=3)
    s, t = torch.randn(3, 5, 4), torch.randn(3, 7, 6)
    got = m(_pad(s, 3), _pad(t, 5), torch.full((3,), 5 / 8), torch.full((3,), 7 / 12))
    assert torch.allclose(m(s, t), got, atol=1e-6)


def test_contrastive_same_ids_are_not_negatives():
    m = EncoderContrastive(2, 2, temperature=0.1, learn_temperature=False)
    v = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])  # two captions of one clip + another clip
    without = m(v, v)
    with_ids = m(v, v, ids=["clip1", "clip1", "clip2"])
    assert with_ids < without
    # masking by ID leaves items 0 and 1 only item 2 as negative: CE = log(1 + exp(0 - 10)); item 2 keeps both
    # others as negatives: CE = log(1 + 2 exp(-10)); both directions are equal here (logits symmetric).
    ref = (2 * math.log(1 + math.exp(-10.0)) + math.log(1 + 2 * math.exp(-10.0))) / 3
    assert with_ids.item() == pytest.approx(ref, abs=1e-7)  # float32 logits near 10
    assert m(v[:2], v[:2], ids=torch.tensor([7, 7])).item() == pytest.approx(0.0, abs=1e-6)


def test_contrastive_single_item_is_zero_and_backward_works():
    torch.manual_seed(6)
    m = EncoderContrastive(4, 4)
    z = m(torch.randn(1, 3, 4, requires_grad=True), torch.randn(1, 3, 4))
    assert z.item() == 0.0
    z.backward()


def test_contrastive_temperature_clamped_and_learned():
    m = EncoderContrastive(4, 4, temperature=0.07)
    assert m.temperature == pytest.approx(0.07)
    assert isinstance(m.log_temperature, torch.nn.Parameter)
    s, t = torch.randn(3, 2, 4, requires_grad=True), torch.randn(3, 2, 4)
    m(s, t).backward()
    assert m.log_temperature.grad is not None and m.log_temperature.grad != 0
    with torch.no_grad():
        m.log_temperature.fill_(-20.0)
    assert m.temperature == pytest.approx(0.01)
    assert torch.isfinite(m(s, t))
    fixed = EncoderContrastive(4, 4, learn_temperature=False)
    assert not list(fixed.parameters())
    with pytest.raises(ValueError, match="temperature"):
        EncoderContrastive(4, 4, temperature=5.0)


def test_contrastive_noise_student_stays_at_chance_but_an_informed_student_does_not():
    """InfoNCE cannot go below log B (chance) without student features that identify the clip."""
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(256, 16, generator=g)
    batches = [torch.randperm(256, generator=g)[:32] for _ in range(300)]
    chance = math.log(32)

    def noise(step):
        return torch.randn(32, 1, 24), teacher[batches[step]]

    def informed(step):
        t = teacher[batches[step]]
        return torch.cat([t, torch.zeros(32, 8)], dim=1).unsqueeze(1), t

    _, last = _fit_mse(noise, EncoderContrastive(24, 16, proj_dim=16), 300, lr=0.01)
    assert last > 0.95 * chance
    _, last_informed = _fit_mse(informed, EncoderContrastive(24, 16, proj_dim=16), 300, lr=0.01)
    assert last_informed < 0.5 * chance
