"""Caption metrics through the optional aac-metrics backend: skip path, and the wiring with a fake package.

aac-metrics is not a dependency: a fake ``aac_metrics`` (with fake ``sentence_transformers`` / ``transformers``) is
injected into ``sys.modules`` so that the code that calls SPIDEr and FENSE runs, with no Java, jar or model file.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import slukd.metrics.caption as caption
from slukd.metrics.caption import caption_metrics

REFS = {
    "a": ["A dog barks loudly.", "a dog is barking"],
    "b": ["rain falls on a roof", "it is raining hard"],
    "c": ["a man speaks", "a man talks quietly"],
}
PREDS = {"a": "A Dog barks!", "b": "", "c": "a man speaks"}


def test_skipped_when_aac_metrics_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "aac_metrics", None)  # import fails as if not installed
    m = caption_metrics(PREDS, REFS, meteor=False, backend="aac-metrics", fense_dir="/nonexistent")
    assert m["backend"] == "pycocoevalcap" and m["tokenizer"] == "simple"
    for name in ("SPICE", "SPIDEr", "FENSE"):
        assert m[name] is None and "pip install aac-metrics==0.5.5" in m["skipped"][name]
    plain = caption_metrics(PREDS, REFS, meteor=False)
    assert m["CIDEr_D"] == plain["CIDEr_D"] > 0 and m["BLEU_4"] == plain["BLEU_4"]


class _Calls:
    def __init__(self) -> None:
        self.spider: dict = {}
        self.fense: dict = {}
        self.max_java_during_call: int | None = None


def _install_fake_aac(monkeypatch, calls: _Calls, spider_error: Exception | None = None) -> types.ModuleType:
    """Fake aac_metrics 0.5.5 surface used by slukd: spider, fense, fer.BERTFlatClassifier, utils.checks."""
    checks = types.ModuleType("aac_metrics.utils.checks")
    checks.MAX_JAVA_MAJOR_VERSION = 13

    def spider(candidates, mult_references, return_all_scores=True, **kw):
        calls.max_java_during_call = checks.MAX_JAVA_MAJOR_VERSION
        spice_dir = Path(kw["cache_path"]) / "aac-metrics" / "spice"
        calls.spider = dict(kw, candidates=candidates, mult_references=mult_references, spice_dir=spice_dir)
        calls.spider["files"] = sorted(p.name for p in (spice_dir / "lib").iterdir())
        calls.spider["has_jar"] = (spice_dir / "spice-1.0.jar").is_file() and (spice_dir / "cache").is_dir()
        if spider_error is not None:
            raise spider_error
        spice = torch.tensor([0.5, 0.0, 0.25], dtype=torch.float64)
        cider = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
        sents = {"cider_d": cider, "spice": spice, "spider": (cider + spice) / 2}
        return {k: v.mean() for k, v in sents.items()}, sents

    class BERTFlatClassifier(torch.nn.Module):
        def __init__(self, model_type: str, num_classes: int = 5) -> None:
            super().__init__()
            self.model_type = model_type
            self.clf = torch.nn.Linear(2, num_classes)

    def fense(candidates, mult_references, return_all_scores=True, **kw):
        calls.fense = dict(kw, candidates=candidates, mult_references=mult_references)
        # a stand-in score that depends on the inputs: fraction of candidate words found in the references
        per = [
            sum(w in " ".join(refs).split() for w in c.split()) / len(c.split())
            for c, refs in zip(candidates, mult_references)
        ]
        per_t = torch.tensor(per, dtype=torch.float64)
        return {"fense": per_t.mean()}, {"fense": per_t}

    class SentenceTransformer:
        def __init__(self, path: str, device: str = "cpu") -> None:
            self.path, self.device = path, device

    class AutoTokenizer:
        @classmethod
        def from_pretrained(cls, path: str):
            tok = cls()
            tok.path = path
            return tok

    mods = {
        "aac_metrics": types.ModuleType("aac_metrics"),
        "aac_metrics.functional": types.ModuleType("aac_metrics.functional"),
        "aac_metrics.functional.spider": types.ModuleType("aac_metrics.functional.spider"),
        "aac_metrics.functional.fense": types.ModuleType("aac_metrics.functional.fense"),
        "aac_metrics.functional.fer": types.ModuleType("aac_metrics.functional.fer"),
        "aac_metrics.utils": types.ModuleType("aac_metrics.utils"),
        "aac_metrics.utils.checks": checks,
        "sentence_transformers": types.ModuleType("sentence_transformers"),
        "transformers": types.ModuleType("transformers"),
    }
    mods["aac_metrics.functional.spider"].spider = spider
    mods["aac_metrics.functional.fense"].fense = fense
    mods["aac_metrics.functional.fer"].BERTFlatClassifier = BERTFlatClassifier
    mods["aac_metrics.utils"].checks = checks
    mods["sentence_transformers"].SentenceTransformer = SentenceTransformer
    mods["transformers"].AutoTokenizer = AutoTokenizer
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(caption, "java_available", lambda: True)
    monkeypatch.setattr(caption, "java_major_version", lambda java="java": 17)
    return checks


def _corenlp_dir(tmp_path: Path) -> Path:
    d = tmp_path / "corenlp"
    d.mkdir()
    for name in caption.CORENLP_JARS:
        (d / name).write_bytes(b"not a real jar")
    return d


def _fense_dir(tmp_path: Path) -> tuple[Path, dict]:
    d = tmp_path / "fense"
    for sub in (caption.FENSE_SBERT, "bert-base-uncased"):
        (d / sub).mkdir(parents=True)
        (d / sub / "config.json").write_text("{}")
    g = torch.Generator().manual_seed(0)
    state = {
        "clf.weight": torch.randn(6, 2, generator=g),
        "clf.bias": torch.randn(6, generator=g),
        "encoder.embeddings.position_ids": torch.arange(4)[None],  # stored by old transformers, dropped on load
    }
    torch.save({"model_type": "bert-base-uncased", "num_classes": 6, "state_dict": state}, d / caption.FENSE_ECHECKER)
    return d, state


def test_spider_and_fense_wired_through_aac_metrics(monkeypatch, tmp_path):
    calls = _Calls()
    checks = _install_fake_aac(monkeypatch, calls)
    fense_dir, state = _fense_dir(tmp_path)
    m = caption_metrics(
        PREDS, REFS, meteor=False, backend="aac-metrics", spice_corenlp_dir=_corenlp_dir(tmp_path), fense_dir=fense_dir
    )
    assert m["backend"] == "aac-metrics" and m["tokenizer"] == "simple"
    assert not {"SPICE", "SPIDEr", "FENSE"} & set(m["skipped"])
    # SPIDEr: the tokenised captions, sorted by ID, the empty one as a placeholder token
    assert calls.spider["candidates"] == ["a dog barks", "<empty>", "a man speaks"]
    assert calls.spider["mult_references"][0] == ["a dog barks loudly", "a dog is barking"]
    assert calls.spider["has_jar"] and {"stanford-corenlp-3.6.0.jar", "SceneGraphParser-1.0.jar"} <= set(
        calls.spider["files"]
    )
    assert calls.max_java_during_call == 17 and checks.MAX_JAVA_MAJOR_VERSION == 13  # raised for the call only
    assert not calls.spider["spice_dir"].exists()  # the assembled cache is temporary
    assert m["SPICE"] == pytest.approx(0.25) and m["SPIDEr"] == pytest.approx((1.0 + 0.25) / 2)
    assert m["per_item_SPIDEr"] == pytest.approx({"a": 1.25, "b": 0.0, "c": 0.625})
    # FENSE: models built from the local folders only, echecker weights from the checkpoint
    echecker = calls.fense["echecker"]
    assert echecker.model_type == str(fense_dir / "bert-base-uncased")
    assert torch.equal(echecker.clf.weight, state["clf.weight"]) and not echecker.training
    assert calls.fense["echecker_tokenizer"].path == str(fense_dir / "bert-base-uncased")
    assert calls.fense["sbert_model"].path == str(fense_dir / caption.FENSE_SBERT)
    assert m["FENSE"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)  # "<empty>" is in no reference
    assert m["per_item_FENSE"]["b"] == 0.0


def test_aac_metrics_missing_files_and_failures_are_skipped(monkeypatch, tmp_path):
    calls = _Calls()
    err = subprocess.CalledProcessError(1, ["java", "-jar", "spice-1.0.jar"])
    checks = _install_fake_aac(monkeypatch, calls, spider_error=err)
    m = caption_metrics(PREDS, REFS, meteor=False, backend="aac-metrics")
    assert m["backend"] == "aac-metrics" and calls.spider == {}
    assert "spice_corenlp_dir" in m["skipped"]["SPIDEr"] and "fense_dir" in m["skipped"]["FENSE"]

    m = caption_metrics(PREDS, REFS, meteor=False, backend="aac-metrics", aac_cache_dir=tmp_path, fense_dir=tmp_path)
    assert "spice-1.0.jar" in m["skipped"]["SPICE"] and "aac-metrics-download" in m["skipped"]["SPICE"]
    assert caption.FENSE_ECHECKER in m["skipped"]["FENSE"] and m["FENSE"] is None

    m = caption_metrics(PREDS, REFS, meteor=False, backend="aac-metrics", spice_corenlp_dir=_corenlp_dir(tmp_path))
    assert m["SPIDEr"] is None and "SPICE failed: CalledProcessError" in m["skipped"]["SPIDEr"]
    assert checks.MAX_JAVA_MAJOR_VERSION == 13  # restored after the failure

    fense_dir, _ = _fense_dir(tmp_path)
    torch.save({"model_type": "bert-base-uncased"}, fense_dir / caption.FENSE_ECHECKER)
    m = caption_metrics(PREDS, REFS, meteor=False, backend="aac-metrics", fense_dir=fense_dir)
    assert "missing field 'num_classes'" in m["skipped"]["FENSE"] and calls.fense == {}


def test_java_major_version_parsing(monkeypatch):
    outputs = {'openjdk version "17.0.15" 2025-04-15': 17, 'java version "1.8.0_312"': 8, "garbage": None}
    monkeypatch.setattr(caption.shutil, "which", lambda name: "/usr/bin/java")
    for text, major in outputs.items():
        done = subprocess.CompletedProcess(["java", "-version"], 0, stdout="", stderr=text)
        monkeypatch.setattr(caption.subprocess, "run", lambda *a, _d=done, **k: _d)
        assert caption.java_major_version() == major
