"""Captioning inference speed: teacher vs student (encoder + batched beam-3 decoding), same clips and batch size.

    PYTHONPATH=. python benchmarks/caption_speed.py                       # paper-size pair on the CPU
    PYTHONPATH=. python benchmarks/caption_speed.py --device cuda --batch_size 32
    PYTHONPATH=. python benchmarks/caption_speed.py --preset demo         # the demo pair of hparams/captioning_kd
    PYTHONPATH=. python benchmarks/caption_speed.py --preset paper_real   # the real architectures, batch 1, 8, 64

Presets: ``paper`` approximates the paper's pair with the project's own modules (a 15-layer transformer encoder +
6-layer SpeechBrain decoder as the ~170M teacher); ``paper_real`` builds the paper's real architectures
(:mod:`slukd.models.paper_caption`, needs ``transformers``): teacher = HTSAT-base (CLAP's audio tower) + BART-base
encoder and decoder with BART's 50265-token vocabulary (about 170M parameters), student = EfficientNet-B2 encoder +
2-layer transformer decoder (d 256, 4 heads, FFN 1024, 4400 words; about 12M), at batch sizes 1, 8 and 64 (random
weights: the configurations are written in code, nothing is downloaded); ``demo`` is the pair of
hparams/captioning_kd/base.yaml.

Both models run through slukd's batched beam search with a key/value cache (``slukd.models.decoding``), on the same
deterministic clips (``--seconds`` long, 16 kHz) and batch size, with random weights: to make the work independent of
what random weights would emit, every clip is decoded for exactly ``--max_len`` tokens (EOS is blocked before, as a
trained captioner capped at 20 words would at most do). Timings are medians over ``--repeats`` passes, teacher and
student alternating, after a warm-up pass. Prints parameters, ms per clip (encoder / decoding / total) and the
teacher/student ratio, for each batch size of ``--batch_sizes`` (default: the preset's, else ``--batch_size``); each
batch size times ``max(--n_clips, batch size)`` clips. The decoding path is printed per model: on CUDA the project's
Seq2Seq takes the CUDA-graph path, the BART teacher (transformers' cache) the dynamic one; ``--dynamic`` makes both
dynamic. The BART teacher's own encoder runs at the start of decoding (counted in "dec").

Both models get the same inference rewrites (:func:`slukd.models.inference_opt.optimize_for_inference`: batch-norm
folding into the convolution before it, in-place activations, channels_last convolution weights; each applies where
its pattern occurs, the counts are printed per model); ``--no_optimize`` times the models as built. Both run under
``torch.inference_mode``. ``torch.compile`` is not used: on the 2-core CPU VM it made the student's encoder slower
(docs/deploy_captioning.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from slukd.captioning.models import build_model
from slukd.models.decoding import beam_search
from slukd.models.inference_opt import optimize_for_inference
from slukd.models.seq2seq import count_parameters


def _paper_real_teacher(vocab: int):
    from slukd.models.paper_caption import paper_teacher

    return paper_teacher(vocab, bart_config={"dropout": 0.0}, htsat_config={"hidden_dropout_prob": 0.0})


def _paper_real_student(vocab: int):
    from slukd.models.paper_caption import paper_student

    return paper_student(vocab, {"dropout": 0.0})


FRONT = {"n_mels": 64, "win_length_ms": 32.0, "hop_length_ms": 10.0}
PRESETS = {
    # paper-size pair: teacher ~170M (the paper's HTSAT + BART-base), student ~11-12M (EfficientNet-B2 + 2-layer d256)
    "paper": {
        "vocab": 4400,
        "teacher": dict(encoder="transformer", d_model=768, nhead=12, num_encoder_layers=15, num_decoder_layers=6,
                        d_ffn=3072, cnn_channels=[32, 32], dropout=0.0, **FRONT),
        "student": dict(encoder="cnn", d_model=256, nhead=4, num_decoder_layers=2, d_ffn=1024, dropout=0.0,
                        cnn={"width": 1.1, "depth": 1.2, "time_stride_stages": [0, 2, 3, 4, 6]}, **FRONT),
    },
    # the real architectures of slukd.models.paper_caption (HTSAT-base + BART-base vs EfficientNet-B2 + 2 layers)
    "paper_real": {
        "teacher_vocab": 50265,  # BART's own BPE vocabulary, as the pretrained teacher
        "student_vocab": 4400,
        "build": {"teacher": _paper_real_teacher, "student": _paper_real_student},
        "batch_sizes": (1, 8, 64),
    },
    # the demo pair of hparams/captioning_kd/base.yaml
    "demo": {
        "vocab": 120,
        "teacher": dict(encoder="conformer", d_model=144, nhead=4, num_encoder_layers=4, num_decoder_layers=2,
                        d_ffn=576, cnn_channels=[16, 16], dropout=0.0, hop_length_ms=20.0, win_length_ms=40.0),
        "student": dict(encoder="cnn", d_model=256, nhead=4, num_decoder_layers=2, d_ffn=1024, dropout=0.0,
                        n_mels=32, hop_length_ms=20.0, win_length_ms=40.0,
                        cnn={"width": 0.25, "depth": 0.5, "max_stages": 4, "time_stride_stages": [0, 2],
                             "head_channels": 256}),
    },
}  # fmt: skip


def make_clips(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """n deterministic clips [n, S]: a few tones with random pitch plus noise (content does not matter for timing)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000.0
    f = 200 + 1800 * torch.rand(n, 3, generator=g)
    x = torch.sin(2 * torch.pi * f[:, :, None] * t).sum(1) / 3
    return (x + 0.1 * torch.randn(n, t.numel(), generator=g)).float()


def build(preset: dict, name: str) -> torch.nn.Module:
    """The preset's ``name`` model ("teacher" / "student") with its vocabulary, random weights (seed 0)."""
    vocab = preset.get(f"{name}_vocab", preset.get("vocab"))
    torch.manual_seed(0)
    if "build" in preset:
        return preset["build"][name](vocab)
    return build_model(preset[name], vocab)


def decoding_path(model, device: torch.device, dynamic: bool) -> str:
    """Which path beam_search takes: the CUDA graph needs CUDA and the model's shape-static step."""
    if device.type == "cuda" and not dynamic and hasattr(model, "init_static_cache"):
        return "cuda-graph"
    return "dynamic"


@torch.inference_mode()
def run_once(
    model, clips: torch.Tensor, batch_size: int, beam: int, max_len: int, device, bf16: bool, dynamic: bool = False
):
    """Seconds spent in the encoder and in decoding for all clips."""
    enc_s = dec_s = 0.0
    for start in range(0, clips.shape[0], batch_size):
        wavs = clips[start : start + batch_size].to(device)
        lens = torch.ones(wavs.shape[0], device=device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            _sync(device)
            t0 = time.perf_counter()
            enc = model.encode(wavs, lens)
            _sync(device)
            t1 = time.perf_counter()
            # min = max ratio = max_len: exactly max_len steps whatever the number of encoder frames (>= 1)
            ratio = float(max_len)
            hyps = beam_search(
                model,
                enc,
                lens,
                beam_size=beam,
                max_len=max_len,
                min_decode_ratio=ratio,
                max_decode_ratio=ratio,
                static=False if dynamic else None,
            )
            _sync(device)
            t2 = time.perf_counter()
        assert all(len(h[0].tokens) == max_len for h in hyps), "decoding did not run the fixed number of steps"
        enc_s += t1 - t0
        dec_s += t2 - t1
    return enc_s, dec_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n_clips", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--batch_sizes", default=None, help="comma-separated, e.g. 1,8,64 (default: the preset's)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--max_len", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both models")
    p.add_argument("--dynamic", action="store_true", help="the dynamic decoding path for both models (no CUDA graph)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no_optimize", action="store_true", help="no inference rewrites (optimize_for_inference)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    if args.batch_sizes:
        try:
            batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        except ValueError:
            p.error(f"--batch_sizes must be comma-separated integers, got {args.batch_sizes!r}")
    else:
        batch_sizes = list(preset.get("batch_sizes", (args.batch_size,)))
    if not batch_sizes or min(batch_sizes) < 1:
        p.error(f"batch sizes must be >= 1, got {batch_sizes}")
    models = {name: build(preset, name).to(device).eval() for name in ("teacher", "student")}
    params = {k: count_parameters(m) for k, m in models.items()}  # as trained (before batch-norm folding)
    rewrites = {k: {} if args.no_optimize else optimize_for_inference(m) for k, m in models.items()}
    paths = {k: decoding_path(m, device, args.dynamic) for k, m in models.items()}
    print(
        f"preset={args.preset} device={device} {torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
        f" threads={torch.get_num_threads()} clips>={args.n_clips}x{args.seconds:g}s batches={batch_sizes}"
        f" beam={args.beam} tokens={args.max_len} bf16={args.bf16}"
    )
    for name, m in models.items():
        print(
            f"  {name}: {type(m).__name__} + {type(m.encoder).__name__}, {params[name] / 1e6:.2f}M parameters, "
            f"vocab {m.vocab_size}, encoder_dim {m.encoder_dim}, decoding path {paths[name]}, "
            f"inference rewrites {rewrites[name] or 'none'}"
        )
    summary = []
    for bs in batch_sizes:
        n_clips = max(args.n_clips, bs)
        clips = make_clips(n_clips, args.seconds)
        run = (bs, args.beam, args.max_len, device, args.bf16, args.dynamic)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in models}
        for m in models.values():  # warm-up
            run_once(m, clips[:bs], *run)
        for _ in range(args.repeats):
            for name, m in models.items():
                times[name].append(run_once(m, clips, *run))
        ms = {}
        print(f"batch {bs} ({n_clips} clips)")
        print(f"  {'model':8s} {'params':>10s} {'enc ms/clip':>12s} {'dec ms/clip':>12s} {'total ms/clip':>14s}")
        for name in models:
            enc = statistics.median(t[0] for t in times[name]) * 1000 / n_clips
            dec = statistics.median(t[1] for t in times[name]) * 1000 / n_clips
            tot = statistics.median(t[0] + t[1] for t in times[name]) * 1000 / n_clips
            ms[name] = tot
            print(f"  {name:8s} {params[name] / 1e6:9.2f}M {enc:12.1f} {dec:12.1f} {tot:14.1f}")
        ratio = ms["teacher"] / ms["student"]
        summary.append((bs, ms["teacher"], ms["student"], ratio))
        print(f"  speed-up (teacher ms / student ms per clip): {ratio:.1f}x   parameters ratio: "
              f"{params['teacher'] / params['student']:.1f}x")  # fmt: skip
    if len(summary) > 1:
        print(f"{'batch':>5s} {'teacher ms/clip':>16s} {'student ms/clip':>16s} {'ratio':>7s}")
        for bs, t_ms, s_ms, ratio in summary:
            print(f"{bs:5d} {t_ms:16.1f} {s_ms:16.1f} {ratio:6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
