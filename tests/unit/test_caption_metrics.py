"""Caption metrics on hand-checkable inputs; CIDEr-D is corpus level."""

from __future__ import annotations

import pytest

from slukd.metrics.caption import caption_metrics, java_available

REFS = {
    "a": ["a dog barks loudly", "a dog is barking"],
    "b": ["rain falls on a roof", "it is raining hard"],
    "c": ["a man speaks", "a man talks quietly"],
}


def test_identical_captions_score_one():
    m = caption_metrics({k: v[0] for k, v in REFS.items()}, REFS, meteor=False)
    for n in range(1, 5):
        assert m[f"BLEU_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert m["ROUGE_L"] == pytest.approx(1.0)
    assert m["CIDEr_D"] > 3.0
    assert m["n"] == 3 and m["tokenizer"] == "simple"


def test_bleu1_by_hand_and_normalisation():
    # unigram precision 2/4 (clipped), hypothesis as long as the closest reference -> no brevity penalty
    m = caption_metrics({"x": "A Cat sat, down!"}, {"x": ["a dog sat up"]}, meteor=False)
    assert m["BLEU_1"] == pytest.approx(0.5, abs=1e-6)


def test_cider_is_corpus_level():
    preds = {k: v[0] for k, v in REFS.items()}
    single = caption_metrics({"a": preds["a"]}, {"a": REFS["a"]}, meteor=False)
    assert single["CIDEr_D"] == 0.0  # one item: every n-gram has document frequency 1 -> idf 0
    whole = caption_metrics(preds, REFS, meteor=False)
    per_batch = [caption_metrics({k: preds[k]}, {k: REFS[k]}, meteor=False)["CIDEr_D"] for k in preds]
    assert sum(per_batch) / 3 == 0.0 and whole["CIDEr_D"] > 1.0
    assert whole["CIDEr_D"] == pytest.approx(sum(whole["per_item_CIDEr_D"].values()) / 3)


def test_bad_inputs_and_empty_prediction():
    with pytest.raises(ValueError, match="IDs differ"):
        caption_metrics({"a": "x"}, {"b": ["x"]})
    with pytest.raises(ValueError, match="no reference"):
        caption_metrics({"a": "x"}, {"a": []})
    m = caption_metrics({"a": "", "b": "rain", "c": "a man speaks"}, REFS, meteor=False)
    assert m["per_item_CIDEr_D"]["a"] == 0.0 and m["per_item_CIDEr_D"]["c"] > 0.0


def test_spice_skipped_with_message(tmp_path):
    m = caption_metrics({"a": "a dog"}, {"a": ["a dog"]}, meteor=False)
    assert m["SPICE"] is None and m["SPIDEr"] is None and "CoreNLP" in m["skipped"]["SPICE"]
    m = caption_metrics({"a": "a dog"}, {"a": ["a dog"]}, meteor=False, spice_corenlp_dir=tmp_path)
    assert m["SPICE"] is None and "stanford-corenlp" in m["skipped"]["SPICE"]


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_meteor_with_java():
    m = caption_metrics({k: v[0] for k, v in REFS.items()}, REFS)
    assert m["METEOR"] == pytest.approx(1.0, abs=1e-3)


def test_tokenizer_and_backend_are_validated_and_recorded():
    with pytest.raises(ValueError, match="unknown tokenizer 'nltk'"):
        caption_metrics({"a": "x"}, {"a": ["x"]}, tokenizer="nltk")
    with pytest.raises(ValueError, match="unknown caption-metrics backend 'coco'"):
        caption_metrics({"a": "x"}, {"a": ["x"]}, backend="coco")
    m = caption_metrics({k: v[0] for k, v in REFS.items()}, REFS, meteor=False)
    assert m["tokenizer"] == "simple" and m["backend"] == "pycocoevalcap"
    assert m["FENSE"] is None and "aac-metrics" in m["skipped"]["FENSE"]


def test_ptb_without_java_says_what_to_install(monkeypatch):
    import slukd.metrics.caption as caption

    monkeypatch.setattr(caption, "java_available", lambda: False)
    with pytest.raises(RuntimeError, match="default-jre-headless"):
        caption.caption_metrics({"a": "x"}, {"a": ["x"]}, tokenizer="ptb", meteor=False)


@pytest.mark.skipif(not java_available(), reason="the PTB tokenizer needs Java")
def test_ptb_tokenizer_with_java():
    preds = {"a": "A Dog\nbarks loudly!", "b": "rain falls on a roof", "c": "A man speaks."}
    m = caption_metrics(preds, REFS, tokenizer="ptb", meteor=False)
    assert m["tokenizer"] == "ptb"
    # lower-cased, punctuation dropped, the newline does not shift the captions that follow it
    assert m["BLEU_4"] == pytest.approx(1.0, abs=1e-6)
    assert m["per_item_CIDEr_D"]["a"] > 0.0 and m["per_item_CIDEr_D"]["c"] > 0.0
