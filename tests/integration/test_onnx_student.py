"""The deployable captioning student: ONNX export round trip (same captions as PyTorch), the int8 graphs, and
``slukd caption --onnx``; plus the inference rewrites of slukd.models.inference_opt (outputs unchanged)."""

from __future__ import annotations

import copy
import json
import runpy
import sys

import pytest
import torch

from slukd.captioning.models import build_model
from slukd.models.decoding import beam_search
from slukd.models.inference_opt import optimize_for_inference
from tests.helpers_slu import REPO

TINY = dict(
    encoder="cnn", d_model=32, nhead=2, num_decoder_layers=2, d_ffn=64, dropout=0.0, n_mels=16, hop_length_ms=20.0,
    win_length_ms=40.0, cnn={"width": 0.25, "depth": 0.5, "max_stages": 3, "time_stride_stages": [0, 2],
                             "head_channels": 32},
)  # fmt: skip


def _tiny_student(vocab: int = 30, seed: int = 0) -> torch.nn.Module:
    """A tiny CNN student with random weights and non-trivial BatchNorm statistics (seeded)."""
    torch.manual_seed(seed)
    model = build_model(TINY, vocab).eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.4 * torch.rand(m.num_features, generator=g) - 0.2)
    return model


def _clips(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(3, 24000, generator=g), torch.tensor([1.0, 0.5, 0.8])


def test_optimize_for_inference_keeps_outputs():
    model = _tiny_student()
    fast = copy.deepcopy(model)
    done = optimize_for_inference(fast)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert done["bn_folded"] == n_bn > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert done["inplace_activations"] > 0
    if torch.backends.mkldnn.is_available():  # conv + SiLU (MBConv, stem, head) and linear + GELU (decoder FFN)
        assert done["act_fused"] > 0
    wavs, lens = _clips()
    with torch.inference_mode():
        for w, ln in ((wavs, lens), (wavs, torch.ones(3))):  # padded and unpadded (mask-free) paths
            a, b = model.encode(w, ln), fast.encode(w, ln)
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        ref = beam_search(model, model.encode(wavs, lens), lens, beam_size=3, max_len=10)
        got = beam_search(fast, fast.encode(wavs, lens), lens, beam_size=3, max_len=10)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in ref]


def test_optimize_for_inference_keeps_teacher_outputs():
    """The same rewrites on a tiny HTSAT + BART teacher (GELU fused into its Swin MLPs and BART FFNs)."""
    pytest.importorskip("transformers")
    from slukd.models.paper_caption import paper_teacher

    torch.manual_seed(0)
    htsat = {
        "spec_size": 64,
        "num_mel_bins": 16,
        "patch_embeds_hidden_size": 16,
        "depths": [1, 1],
        "num_attention_heads": [1, 2],
        "window_size": 4,
        "hidden_size": 32,
        "hidden_dropout_prob": 0.0,
    }
    bart = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "dropout": 0.0}  # fmt: skip
    teacher = paper_teacher(40, htsat_config=htsat, bart_config=bart, n_mels=16).eval()
    fast = copy.deepcopy(teacher)
    done = optimize_for_inference(fast)
    if torch.backends.mkldnn.is_available():
        assert done["act_fused"] == 2 + 2  # one MLP per Swin block, one FFN per BART layer
    wavs, lens = _clips()
    with torch.inference_mode():
        torch.testing.assert_close(fast.encode(wavs, lens), teacher.encode(wavs, lens), rtol=1e-4, atol=1e-4)
        enc = teacher.encode(wavs, lens)
        ref = beam_search(teacher, enc, lens, beam_size=3, max_len=8)
        got = beam_search(fast, fast.encode(wavs, lens), lens, beam_size=3, max_len=8)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in ref]


def test_onnx_round_trip_same_captions(tmp_path):
    pytest.importorskip("onnxruntime")
    from slukd.export.onnx_student import DFTSTFT, OnnxStudent, export_student

    model = _tiny_student()
    wavs, lens = _clips()
    stft = model.features.fbank.compute_STFT
    torch.testing.assert_close(DFTSTFT(stft)(wavs), stft(wavs), rtol=1e-4, atol=1e-4)
    out = export_student(model, tmp_path / "onnx", max_positions=32, int8=True)
    manifest = json.loads((out / "student.json").read_text())
    assert manifest["vocab_size"] == 30 and manifest["num_layers"] == 2
    runner = OnnxStudent(out)
    with torch.inference_mode():
        enc = model.encode(wavs, lens)
        enc_onnx = runner.encode(wavs, lens)
        torch.testing.assert_close(enc_onnx, enc, rtol=1e-4, atol=1e-4)
        # one step from the same state: same log-probs
        st, st_o = model.init_state(enc, lens, group=2), runner.init_state(enc, lens, group=2)
        toks = torch.tensor([1, 1, 1, 1, 1, 1])
        lp, st = model.step(toks, st)
        lp_o, st_o = runner.step(toks, st_o)
        torch.testing.assert_close(lp_o, lp, rtol=1e-4, atol=1e-4)
        lp2, _ = model.step(toks.flip(0), model.reorder_state(st, torch.tensor([1, 0, 3, 2, 5, 4]), True))
        lp2_o, _ = runner.step(toks.flip(0), runner.reorder_state(st_o, torch.tensor([1, 0, 3, 2, 5, 4]), True))
        torch.testing.assert_close(lp2_o, lp2, rtol=1e-4, atol=1e-4)
        ref = beam_search(model, enc, lens, beam_size=3, max_len=12, nbest=2)
        got = beam_search(runner, enc_onnx, lens, beam_size=3, max_len=12, nbest=2)
        # greedy too, and a batch that drops finished clips (reorder with same_items=False)
        greedy_ref = beam_search(model, enc, lens, beam_size=1, max_len=12)
        greedy_got = beam_search(runner, enc_onnx, lens, beam_size=1, max_len=12)
    assert [[h.tokens for h in hs] for hs in got] == [[h.tokens for h in hs] for hs in ref]
    assert [h[0].tokens for h in greedy_got] == [h[0].tokens for h in greedy_ref]
    for hs, hs_ref in zip(got, ref):
        assert hs[0].score == pytest.approx(hs_ref[0].score, abs=1e-4)
    # the int8 graphs run and give captions of the right form (quality is measured in benchmarks/deploy_speed.py)
    q = OnnxStudent(out, int8=True)
    with torch.inference_mode():
        hyps = beam_search(q, q.encode(wavs, lens), lens, beam_size=3, max_len=12)
    assert len(hyps) == 3 and all(0 <= t < 30 for h in hyps for t in h[0].tokens)


def test_onnx_runner_rejects_bad_folder(tmp_path):
    pytest.importorskip("onnxruntime")
    from slukd.export.onnx_student import OnnxStudent

    (tmp_path / "student.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="student.json: field 'format'"):
        OnnxStudent(tmp_path)
    (tmp_path / "student.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the export manifest"):
        OnnxStudent(tmp_path)


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    """A finished tiny captioning run of the CNN student (student_supervised row, 1 epoch, tiny scenes tier)."""
    tmp = tmp_path_factory.mktemp("cap_student")
    argv = [
        str(REPO / "recipes/captioning_kd.py"),
        str(REPO / "hparams/captioning_kd/student_supervised.yaml"),
        f"--base={REPO / 'hparams/captioning_kd/base_tiny.yaml'}",
        f"--data_folder={tmp / 'data'}",
        f"--output_folder={tmp / 'run'}",
        "--synth_jobs=1",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(argv[0], run_name="__main__")
    assert exc.value.code == 0
    return tmp / "run"


def test_caption_cli_with_onnx_export(student_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from slukd.cli import main
    from slukd.data.captions import read_manifest
    from slukd.export.onnx_student import main as export_main
    from slukd.inference import from_run

    files = [r["wav"] for r in read_manifest(student_run / "manifests/test.csv")][:4]
    onnx_dir = tmp_path / "onnx"
    assert export_main([str(student_run), str(onnx_dir), "--int8"]) == 0
    assert {"encoder.onnx", "init.onnx", "step.onnx", "step.int8.onnx", "vocab.json"} <= {
        p.name for p in onnx_dir.iterdir()
    }
    expected = from_run(student_run).caption_files(files)
    capsys.readouterr()
    assert main(["caption", str(student_run), *files, "--onnx", str(onnx_dir), "--batch_size", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{f}\t{c}" for f, c in zip(files, expected)]
    assert main(["caption", str(student_run), *files, "--onnx", str(onnx_dir), "--int8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(files)
    # an export of another model (other vocabulary) is refused with the file and field named
    manifest = json.loads((onnx_dir / "student.json").read_text())
    manifest["vocab_size"] += 1
    (onnx_dir / "student.json").write_text(json.dumps(manifest))
    assert main(["caption", str(student_run), files[0], "--onnx", str(onnx_dir)]) == 2
    assert "student.json: vocab_size" in capsys.readouterr().err
