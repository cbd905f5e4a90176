"""The papers' configurations at their real size (slow): random weights of wav2vec2-base, HTSAT-base and BART-base
saved locally, base_paper.yaml of both recipes, every task under SpeechBrain's --debug on the CPU
(benchmarks/paper_size.py does the same for every encoder and both SLURP splits, and times each phase)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import yaml

from tests.conftest import REPO

pytest.importorskip("transformers")


def _bench():
    spec = importlib.util.spec_from_file_location("paper_size", REPO / "benchmarks" / "paper_size.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.timeout(5400)  # about 40 minutes on a loaded 2-core CPU (real-size models, beam 20 to 130 tokens)
def test_both_recipes_run_every_task_at_the_real_size(tmp_path):
    ps = _bench()
    ckpts = ps.save_checkpoints(tmp_path / "ckpt", ["wav2vec2", "hubert", "wavlm"])
    corpus = ps.make_scenario_corpus(tmp_path / "corpus", {"train": 2, "devel": 1, "test": 1}, seconds=1.0)
    r = ps.run_slu(tmp_path, ckpts["wav2vec2"], corpus, "slurp3", "seq_kd", "cpu", full_steps=False)
    assert r["rc"] == 0, open(r["log"]).read()[-3000:]
    assert r["n_tasks"] == 3 and [t["seen_n"] for t in r["tasks"]] == [6, 12, 18]  # one test clip per scenario
    assert r["too_long_dropped"] == 1  # the 8 s training clip: dropped and counted, not cropped
    run = tmp_path / "runs" / "slu_slurp3_wav2vec2_seq_kd-debug"
    text = (run / "hparams_resolved.yaml").read_text()
    hp = {m.group(1): yaml.safe_load(m.group(2)) for m in re.finditer(r"^(\w+): ([^!\n#]*?)\s*(?:#.*)?$", text, re.M)}
    want = {"d_model": 768, "nhead": 8, "d_ffn": 3072, "num_decoder_layers": 6, "batch_size": 32, "ctc_weight": 0.0,
            "test_beam_size": 20, "pseudo_beam_size": 20, "length_penalty": 0.6, "weight_decay": 0.1,
            "label_smoothing": 0.0, "max_duration": 7.0, "tokenizer_type": "bpe"}  # fmt: skip
    assert {k: hp[k] for k in want} == want
    log = (run / "task2" / "train_log.txt").read_text()
    assert "kd_seq" in log  # seq-KD trained on the teacher's beam-20 hypotheses of the memory
    assert list((run / "task2" / "targets").glob("targets_*.pt"))  # the teacher's hypotheses of the memory
    memory = json.loads((run / "memory_after_task1.json").read_text())
    assert memory["per_class"] == 70 and memory["selection"] == "herding"
    cap = ps.run_captioning(tmp_path, ckpts, "cpu", full_steps=False)
    for name in ("teacher", "student"):
        assert cap[name]["rc"] == 0, open(cap[name]["log"]).read()[-3000:]
        assert cap[name]["results"] is not None


@pytest.mark.slow
def test_hubert_and_wavlm_base_train_on_the_paper_base(tmp_path):
    """Real-size HuBERT-base and WavLM-base-plus (random weights) build from base_paper.yaml and take a training
    step: every trainable parameter gets a gradient (SpecAugment's unused mask vector aside), the CNN feature extractor
    none."""
    import torch

    from slukd.config import load_hparams

    ps = _bench()
    ckpts = ps.save_checkpoints(tmp_path / "ckpt", ["hubert", "wavlm"])
    for kind in ("hubert", "wavlm"):
        hp, _ = load_hparams(REPO / "hparams" / "slurp_incremental" / "seq_kd.yaml",
                             f"base: base_paper.yaml\npretrained_folder: {ckpts[kind]}")  # fmt: skip
        torch.manual_seed(0)
        model = hp["model"](vocab_size=1000)
        model.encoder.model.config.layerdrop = 0.0  # the base configs' LayerDrop (0.1) skips random layers in training
        wavs, lens = torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.7])
        bos = torch.randint(3, 999, (2, 12))
        bos[:, 0] = 1
        enc = model.encode(wavs, lens)
        model.decode(enc, lens, bos).float().logsumexp(-1).mean().backward()
        assert enc.shape == (2, 49, 768) and model.encoder.out_dim == 768
        # every trainable parameter gets a gradient, except SpecAugment's mask vector (no SpecAugment on the paper base)
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == ["encoder.lobe.model.masked_spec_embed"], (kind, missing)
        assert all(not p.requires_grad for p in model.encoder.model.feature_extractor.parameters())
