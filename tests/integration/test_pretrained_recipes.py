"""The papers' real setting through the recipes: tiny wav2vec2 / HuBERT / WavLM checkpoints and a tiny HTSAT + BART
teacher, saved locally with save_pretrained (the path a downloaded checkpoint takes), train in the SLU recipe (on
the paper base: SSL encoder with its own learning rate, herding and audio-KD on its outputs) and the captioning
recipe (HTSAT + BART teacher, EfficientNet student distilling it)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO
from tests.helpers_slu import HP, TINY, make_corpus, recipe_module, write_order

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ssl_corpus"), {"train": 3, "devel": 1, "test": 1})


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
def test_slu_recipe_trains_on_a_local_pretrained_encoder(kind, tone_corpus, tmp_path):
    from tests.unit.test_pretrained_ssl import save_tiny

    ckpt = tmp_path / kind
    save_tiny(kind, ckpt)
    out = tmp_path / "run"
    keep = [a for a in TINY if not a.startswith(("--d_model", "--nhead", "--num_decoder_layers", "--d_ffn",
                                                 "--num_encoder_layers", "--n_mels"))]  # fmt: skip
    argv = [str(HP / "all_kd.yaml"), f"--base={HP / 'base_paper.yaml'}", f"--data_folder={tone_corpus}",
            f"--output_folder={out}", f"--order={write_order(tmp_path)}", *keep, f"--pretrained_folder={ckpt}",
            "--d_model=32", "--nhead=2", "--num_decoder_layers=1", "--d_ffn=64",
            "--encoder_lr=0.0001", "--max_audio_seconds=1.0", "--use_synthetic=false",
            "--later_task_epochs=1"]  # fmt: skip
    assert recipe_module("slurp_incremental").main(argv) == 0
    step2 = json.loads((out / "results" / "step2.json").read_text())
    assert step2["seen"]["n"] == 4
    log = (out / "task2" / "train_log.txt").read_text()
    assert "train kd_enc:" in log and "train kd_seq:" in log  # audio-KD on the SSL encoder's outputs
    memory = json.loads((out / "memory_after_task1.json").read_text())
    assert memory["selection"] == "herding" and sum(len(v) for v in memory["classes"].values()) == 4
    # the encoder has its own learning rate (a second parameter group in the saved optimiser)
    opt = next((out / "task2" / "save").glob("CKPT*/optimizer.ckpt"))
    groups = torch.load(opt, weights_only=False)["param_groups"]
    assert sorted(g["initial_lr"] for g in groups) == [0.00005, 0.0001]  # base_paper: lr 5e-5


def test_captioning_recipe_trains_with_a_local_htsat_bart_teacher(tmp_path):
    from tests.unit.test_paper_caption import save_checkpoints

    save_checkpoints(tmp_path / "ckpt")
    base = REPO / "hparams" / "captioning_kd" / "base_paper.yaml"
    tiny = (f"base: {base}\ntier: tiny\nlimit_clips: 8\nnumber_of_epochs: 1\nbatch_size: 4\naudio_only_batch_size: 4\n"
            "eval_batch_size: 4\nmax_decode_len: 5\nprecision: fp32\neval_precision: fp32\nnum_workers: 0\n"
            "max_audio_seconds: 3.0\n"
            "noprogressbar: true\nmetric_options: {meteor: false}\nenc_kd_proj_dim: 16\n"
            "teacher_model: !name:slukd.captioning.models.build_captioner\n"
            f"    encoder: htsat_bart\n    htsat_source: {tmp_path / 'ckpt' / 'clap'}\n"
            f"    bart_source: {tmp_path / 'ckpt' / 'bart'}\n    n_mels: 16\n"
            "student_model: !name:slukd.models.paper_caption.paper_student\n"
            "    spec: {cnn: {width: 0.25, depth: 0.5, max_stages: 4, time_stride_stages: [0, 2], "
            "head_channels: 64}}\n")  # fmt: skip
    (tmp_path / "tiny_paper.yaml").write_text(tiny)
    cap = recipe_module("captioning_kd")
    hp = REPO / "hparams" / "captioning_kd"
    common = [f"--base={tmp_path / 'tiny_paper.yaml'}", f"--data_folder={tmp_path / 'data'}",
              f"--teacher_folder={tmp_path / 'teacher'}"]  # fmt: skip
    assert cap.main([str(hp / "teacher.yaml"), *common, f"--output_folder={tmp_path / 'teacher'}"]) == 0
    teacher = json.loads((tmp_path / "teacher" / "results.json").read_text())
    assert teacher["role"] == "teacher" and "htsat_bart" in (tmp_path / "teacher" / "model.yaml").read_text()
    assert cap.main([str(hp / "student_seqkd_contrastive_audio.yaml"), *common,
                     f"--output_folder={tmp_path / 'student'}"]) == 0  # fmt: skip
    log = (tmp_path / "student" / "train_log.txt").read_text()
    assert "train kd_enc:" in log and "train ao_seq:" in log
    head = next((tmp_path / "student" / "save").glob("CKPT*/kd_enc.ckpt"))
    weights = torch.load(head, weights_only=False)
    shapes = sorted(tuple(v.shape) for k, v in weights.items() if k.endswith("weight"))
    assert (16, 32) in shapes and (16, 64) in shapes  # teacher (HTSAT, 32) and student (64) mapped to 16
