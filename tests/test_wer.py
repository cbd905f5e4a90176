"""WER / CER: normalisation policy, hand-computed corpus rates, empty references, bad input."""

from __future__ import annotations

import random

import pytest

from slukd.metrics.slurp_scorer import levenshtein_py
from slukd.metrics.wer import cer, cer_counts, normalize_text, wer, wer_counts


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Hello,   World!", "hello world"),
        ("Don't STOP", "don't stop"),
        ("it\u2019s", "it's"),  # typographic apostrophe
        ("'quoted' words", "quoted words"),
        ("jessica 's alarm", "jessica s alarm"),  # SLURP-style token: the apostrophe is not word-internal
        ("well-known a/b", "well known a b"),
        ("$5 + 10% & co", "$5 + 10 co"),  # symbols (S*: $ +) are kept; % & are punctuation (Po)
        ("  \t\n ", ""),
    ],
)
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_hand_computed_corpus_wer():
    refs = ["the cat sat", "hello world"]
    hyps = ["the cat sit on", "hello"]
    c = wer_counts(refs, hyps)
    assert (c.substitutions, c.deletions, c.insertions, c.hits, c.n_ref) == (1, 1, 1, 3, 5)
    assert wer(refs, hyps) == pytest.approx(3 / 5)


def test_corpus_level_not_mean_of_utterances():
    assert wer(["a", "b c d e"], ["x", "b c d e"]) == pytest.approx(1 / 5)


def test_normalisation_applied_or_not():
    assert wer("The Cat, sat.", "the cat sat") == 0.0
    assert wer("The Cat, sat.", "the cat sat", normalize=False) == pytest.approx(1.0)  # 3 substitutions / 3


def test_cer_counts_spaces():
    assert cer("abc", "abd") == pytest.approx(1 / 3)
    c = cer_counts("a b", "ab")
    assert (c.deletions, c.n_ref) == (1, 3)
    assert cer(["Ab,", "c"], ["ab", "d"]) == pytest.approx(1 / 3)


def test_empty_references_do_not_crash():
    c = wer_counts(["", "a b"], ["x y", "a b"])
    assert (c.insertions, c.n_ref, c.n_empty_refs) == (2, 2, 1)
    assert c.rate == pytest.approx(1.0)
    assert wer(["", "!!"], ["", ""]) == 0.0  # nothing to say, nothing said
    assert wer([""], ["something"]) == 1.0  # policy: errors with no reference words -> 1.0
    assert cer([""], [""]) == 0.0 and cer([""], ["ab"]) == 1.0
    assert wer(["a"], [""]) == 1.0


def test_matches_independent_edit_distance():
    rng = random.Random(0)
    vocab = ["a", "b", "c", "d"]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(1, 6))) for _ in range(50)]
    hyps = [" ".join(rng.choices(vocab, k=rng.randint(0, 6))) for _ in range(50)]
    errors = sum(levenshtein_py(r.split(), h.split()) for r, h in zip(refs, hyps))
    assert wer(refs, hyps) == pytest.approx(errors / sum(len(r.split()) for r in refs))
    char_errors = sum(levenshtein_py(r, h) for r, h in zip(refs, hyps))
    assert cer(refs, hyps) == pytest.approx(char_errors / sum(len(r) for r in refs))


def test_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="hypothesis 1 is NoneType"):
        cer(["a", "b"], ["a", None])
