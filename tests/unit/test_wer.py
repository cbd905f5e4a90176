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


def test_write_wer_alignments_hand_computed(tmp_path):
    from slukd.metrics.wer import write_wer_alignments

    ids = ["u1", "u2", "u3"]
    refs = ["The cat sat.", "Hello, World!", "Don\u2019t stop"]
    hyps = ["the cat sit on", "hello", "do not stop"]
    # u1: sat->sit, +on (2 edits / 3); u2: -world (1 / 2); u3: don't->do, +not (2 / 2): the apostrophe keeps
    # "don't" one word. Corpus: 5 edits / 7 reference words, 2 ins 1 del 2 sub.
    out = tmp_path / "sub" / "wer.txt"
    summary = write_wer_alignments(out, ids, refs, hyps)
    assert (summary["num_edits"], summary["num_scored_tokens"]) == (5, 7)
    assert (summary["insertions"], summary["deletions"], summary["substitutions"]) == (2, 1, 2)
    assert summary["WER"] == pytest.approx(100 * 5 / 7) == pytest.approx(100 * wer(refs, hyps))
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "%WER 71.43 [ 5 / 7, 2 ins, 1 del, 2 sub ]"
    assert lines[1] == "%SER 100.00 [ 3 / 3 ]"
    assert "u1, %WER 66.67 [ 2 / 3, 1 ins, 0 del, 1 sub ]" in lines
    assert "u2, %WER 50.00 [ 1 / 2, 0 ins, 1 del, 0 sub ]" in lines
    i = lines.index("u3, %WER 100.00 [ 2 / 2, 1 ins, 0 del, 1 sub ]")
    ref_row, op_row, hyp_row = (line.split(" ; ") for line in lines[i + 1 : i + 4])
    assert [t.strip() for t in ref_row] == ["don't", "<eps>", "stop"]
    assert [t.strip() for t in op_row] == ["S", "I", "="]
    assert [t.strip() for t in hyp_row] == ["do", "not", "stop"]
    assert [p.name for p in out.parent.iterdir()] == ["wer.txt"]  # atomic write leaves no temp file


def test_write_wer_alignments_matches_corpus_wer(tmp_path):
    from slukd.metrics.wer import write_wer_alignments

    rng = random.Random(1)
    vocab = ["a", "b", "c", "d", "it's", "e."]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(0, 6))) for _ in range(40)]
    hyps = [" ".join(rng.choices(vocab, k=rng.randint(0, 6))) for _ in range(40)]
    summary = write_wer_alignments(tmp_path / "wer.txt", [f"utt{i:02d}" for i in range(40)], refs, hyps)
    first = (tmp_path / "wer.txt").read_text(encoding="utf-8").splitlines()[0]
    assert summary["WER"] == pytest.approx(100 * wer(refs, hyps))
    assert float(first.split()[1]) == pytest.approx(100 * wer(refs, hyps), abs=0.005)
    assert summary["num_scored_tokens"] == wer_counts(refs, hyps).n_ref


def test_write_wer_alignments_empty_references_and_bad_input(tmp_path):
    from slukd.metrics.wer import write_wer_alignments

    s = write_wer_alignments(tmp_path / "w.txt", ["x"], ["!!"], ["something said"])
    assert s["WER"] == 100.0 == 100 * wer(["!!"], ["something said"])  # N = 0 policy, not SpeechBrain's 0
    assert (tmp_path / "w.txt").read_text().startswith("%WER 100.00 [ 2 / 0, 2 ins")
    with pytest.raises(ValueError, match="duplicate utterance ID 'a'"):
        write_wer_alignments(tmp_path / "w.txt", ["a", "a"], ["x", "y"], ["x", "y"])
    with pytest.raises(ValueError, match="1 utterance IDs but 2 references"):
        write_wer_alignments(tmp_path / "w.txt", ["a"], ["x", "y"], ["x", "y"])
    with pytest.raises(ValueError, match="no utterances to align"):
        write_wer_alignments(tmp_path / "w.txt", [], [], [])
