"""Tests of slukd.models.decoding against SpeechBrain's stock searchers and a naive full-prefix decoder."""

from __future__ import annotations

import pytest
import torch

from slukd.models import Seq2Seq
from slukd.models.decoding import Hypothesis, beam_search, decode_batch, greedy_search, stock_searcher
from tests.helpers_decoding import N, V, memorised_model


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained (~1 s) to memorise 16 random-feature -> token-sequence pairs, and 64 test inputs."""
    return memorised_model()


def _naive_greedy(model: Seq2Seq, enc: torch.Tensor, lens: torch.Tensor) -> list[list[int]]:
    """Reference: re-run the whole prefix through the teacher-forced decoder at every step, one item at a time."""
    out = []
    frames = model.num_valid_frames(enc, lens).tolist()
    for i in range(enc.shape[0]):
        toks = [model.bos_index]
        for _ in range(int(frames[i] * 1.0)):
            with torch.no_grad():
                logits = model.decode(enc[i : i + 1], lens[i : i + 1], torch.tensor([toks]))
            nxt = int(logits[0, -1].argmax())
            if nxt == model.eos_index:
                break
            toks.append(nxt)
        out.append(toks[1:])
    return out


def test_model_memorised(trained):
    m, enc, lens, targets = trained
    assert greedy_search(m, enc[:N], lens[:N]) == targets


def test_greedy_matches_stock_and_naive(trained):
    m, enc, lens, _ = trained
    ours = greedy_search(m, enc, lens)
    assert ours == _naive_greedy(m, enc, lens)
    compat = greedy_search(m, enc, lens, speechbrain_compat=True)
    with torch.no_grad():
        stock_greedy = stock_searcher(m, greedy=True)(enc, lens)[0]
        stock_beam1 = stock_searcher(m, beam_size=1)(enc, lens)[0]
    assert compat == stock_greedy
    # beam 1 == greedy, except that SpeechBrain's beam searcher drops the last token of a hypothesis cut at max length
    beam1 = [h[0].tokens for h in beam_search(m, enc, lens, beam_size=1, speechbrain_compat=True)]
    assert beam1 == stock_beam1
    assert [g if len(g) < enc.shape[1] else g[:-1] for g in compat] == stock_beam1


@pytest.mark.parametrize("length_normalization", [True, False])
def test_beam_matches_stock(trained, length_normalization):
    m, enc, lens, targets = trained
    ours = beam_search(m, enc, lens, beam_size=5, length_normalization=length_normalization, speechbrain_compat=True)
    with torch.no_grad():
        hyps, _, scores, _ = stock_searcher(m, 5, length_normalization=length_normalization)(enc, lens)
    agree = sum(o[0].tokens == h for o, h in zip(ours, hyps))
    assert agree >= 0.99 * len(hyps), f"{agree}/{len(hyps)}"
    same = [i for i, (o, h) in enumerate(zip(ours, hyps)) if o[0].tokens == h]
    assert torch.allclose(torch.tensor([ours[i][0].score for i in same]), scores[same].float(), atol=1e-4)
    # per-utterance bounds (the default) change nothing on the memorised items (they end well before them)
    default = beam_search(m, enc[:N], lens[:N], beam_size=5, length_normalization=length_normalization)
    assert [h[0].tokens for h in default] == [o[0].tokens for o in ours[:N]]
    assert all(h[0].finished for h in default)


def test_beam_eos_threshold_and_min_ratio_match_stock(trained):
    m, enc, lens, _ = trained
    for kw in ({"eos_threshold": 1.5}, {"min_decode_ratio": 0.3}):
        ours = beam_search(m, enc, lens, beam_size=4, speechbrain_compat=True, **kw)
        with torch.no_grad():
            hyps = stock_searcher(m, 4, **kw)(enc, lens)[0]
        agree = sum(o[0].tokens == h for o, h in zip(ours, hyps))
        assert agree >= 0.99 * len(hyps), (kw, agree)


def test_nbest_scores_are_length_normalised_log_probs(trained):
    m, enc, lens, _ = trained
    res = beam_search(m, enc[: 2 * N], lens[: 2 * N], beam_size=5, nbest=3)
    for i, hyps in enumerate(res):
        assert len(hyps) == 3 and all(isinstance(h, Hypothesis) for h in hyps)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3
        for h in hyps:
            seq = [m.bos_index] + h.tokens + ([m.eos_index] if h.finished else [])
            with torch.no_grad():
                lp = torch.log_softmax(m.decode(enc[i : i + 1], lens[i : i + 1], torch.tensor([seq[:-1]])), -1)[0]
            total = lp[torch.arange(len(seq) - 1), torch.tensor(seq[1:])].sum()
            assert abs(float(total) / (len(seq) - 1) - h.score) < 1e-4


def _authors_score(lps: list[float], alpha: float) -> float:
    """The SLU authors' beam score of one hypothesis: the step-t log-prob (t = 1, 2, ...) over ((5 + t) / 6)^alpha."""
    return sum(lp / ((5 + t) / 6) ** alpha for t, lp in enumerate(lps, start=1))


def test_length_penalty_scores_are_the_authors_formula(trained):
    """With length_penalty=alpha the stored score of a hypothesis is sum_t log p_t / ((5 + t) / 6)^alpha (no division
    by the length); the best hypothesis is the top one by that score among the beam's, and the penalty changes some
    results against the length-normalised ranking (so the option is in effect)."""
    m, enc, lens, _ = trained
    res = beam_search(m, enc, lens, beam_size=5, nbest=5, length_penalty=0.6)
    for i, hyps in enumerate(res):
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            seq = [m.bos_index] + h.tokens + ([m.eos_index] if h.finished else [])
            with torch.no_grad():
                lp = torch.log_softmax(m.decode(enc[i : i + 1], lens[i : i + 1], torch.tensor([seq[:-1]])), -1)[0]
            steps = lp[torch.arange(len(seq) - 1), torch.tensor(seq[1:])].tolist()
            assert abs(_authors_score(steps, 0.6) - h.score) < 1e-4 * max(1.0, abs(h.score))
    # alpha = 0: the plain sum of log-probs, i.e. length_normalization=False
    plain = beam_search(m, enc, lens, beam_size=5, length_normalization=False)
    zero = beam_search(m, enc, lens, beam_size=5, length_penalty=0.0)
    assert [h[0].tokens for h in zero] == [h[0].tokens for h in plain]
    normed = beam_search(m, enc, lens, beam_size=5, nbest=5)
    assert any([h.score for h in a] != [h.score for h in b] for a, b in zip(res, normed))


def test_items_finish_independently(trained):
    """An item decodes the same alone and inside a batch of items with other lengths."""
    m, enc, lens, _ = trained
    idx = [3, 17, 40, 63, 50]
    batch = beam_search(m, enc[idx], lens[idx], beam_size=5, nbest=2)
    batch_g = greedy_search(m, enc[idx], lens[idx])
    for j, i in enumerate(idx):
        n_valid = int(m.num_valid_frames(enc[i : i + 1], lens[i : i + 1]))
        # alone, cut to its own valid frames (relative length 1)
        alone = beam_search(m, enc[i : i + 1, :n_valid], torch.ones(1), beam_size=5, nbest=2)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batch[j]]
        assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(alone, batch[j]))
        assert greedy_search(m, enc[i : i + 1, :n_valid], torch.ones(1))[0] == batch_g[j]


def test_step_logits_equal_teacher_forcing_on_trained_model(trained):
    m, enc, lens, targets = trained
    seq = torch.tensor([[1] + targets[0]])
    with torch.no_grad():
        ref = torch.log_softmax(m.decode(enc[:1], lens[:1], seq).float(), -1)[0]
        state = m.init_state(enc[:1], lens[:1])
        for t in range(seq.shape[1]):
            lp, state = m.step(seq[:, t], state)
            assert (lp[0] - ref[t]).abs().max() < 1e-5


def test_length_bounds(trained):
    m, enc, lens, _ = trained
    frames = m.num_valid_frames(enc, lens).tolist()
    for res in (greedy_search(m, enc, lens, max_len=3), [h[0].tokens for h in beam_search(m, enc, lens, max_len=3)]):
        assert max(len(r) for r in res) <= 3
    forced = beam_search(m, enc, lens, beam_size=3, min_decode_ratio=0.8)
    for f, hyps in zip(frames, forced):
        assert len(hyps[0].tokens) + int(hyps[0].finished) >= int(f * 0.8)
    forced_g = greedy_search(m, enc, lens, min_decode_ratio=0.8)
    assert all(len(g) + 1 >= int(f * 0.8) for f, g in zip(frames, forced_g))
    with pytest.raises(ValueError, match="min_decode_ratio"):
        greedy_search(m, enc, lens, min_decode_ratio=0.5, max_decode_ratio=0.2)
    with pytest.raises(ValueError, match="nbest"):
        beam_search(m, enc, lens, beam_size=2, nbest=3)


def test_decode_batch_from_waveforms_and_bf16():
    torch.manual_seed(0)
    m = Seq2Seq(V, d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1, d_ffn=64).eval()
    wavs = torch.randn(3, 4000)
    lens = torch.tensor([1.0, 0.7, 0.4])
    with torch.no_grad():
        enc = m.encode(wavs, lens)
    frames = m.num_valid_frames(enc, lens).tolist()
    best = decode_batch(m, wavs, lens, beam_size=3)
    assert len(best) == 3 and all(len(b) <= f for b, f in zip(best, frames))
    assert decode_batch(m, wavs, lens, beam_size=1) == greedy_search(m, enc, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = decode_batch(m, wavs, lens, beam_size=3)
    assert len(res) == 3 and all(all(0 <= t < V for t in r) for r in res)
    # a bf16 encoder output decodes outside autocast too (cast to the decoder's dtype)
    res16 = beam_search(m, enc.to(torch.bfloat16), lens, beam_size=3)
    assert len(res16) == 3 and all(len(h[0].tokens) <= f for h, f in zip(res16, frames))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(trained):
    m, enc, lens, _ = trained
    cpu = beam_search(m, enc, lens)
    gpu = beam_search(m.cuda(), enc.cuda(), lens.cuda())
    m.cpu()
    agree = sum(a[0].tokens == b[0].tokens for a, b in zip(cpu, gpu))
    assert agree >= 0.99 * len(cpu)
