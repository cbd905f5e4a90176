"""Decoding speed: slukd beam search vs SpeechBrain's S2STransformerBeamSearcher on the same model (ratio, agreement).

Builds one Seq2Seq (random weights: its hypotheses run to the maximum length, the fair worst case for both
searchers, since neither can stop early), encodes a batch of random waveforms of 2-4 s once, then times decoding only:
the stock searcher and ours, with the same settings (beam 5, batch 32, length normalisation, max_decode_ratio 1.0,
``speechbrain_compat=True`` so both run the same number of steps), median of repeats after a warm-up. Prints ms per
utterance, the ratio, and how many best hypotheses agree.

    PYTHONPATH=. python benchmarks/decode.py [--device cuda] [--model-size small|large] [--bf16]

Needs only torch + speechbrain (no slukd install: PYTHONPATH=. is enough).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from slukd.models.decoding import beam_search, greedy_search, stock_searcher  # noqa: E402
from slukd.models.seq2seq import Seq2Seq, count_parameters  # noqa: E402

SIZES = {
    # the default recipe model (~2.8M parameters with a 1000-token vocabulary)
    "small": dict(d_model=144, nhead=4, num_encoder_layers=4, num_decoder_layers=2, d_ffn=576),
    # a teacher-sized model (~35M parameters)
    "large": dict(d_model=384, nhead=8, num_encoder_layers=12, num_decoder_layers=6, d_ffn=1536),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, repeats: int, warmup: int) -> tuple[float, object]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-size", choices=sorted(SIZES), default="small")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--min-sec", type=float, default=2.0)
    p.add_argument("--max-sec", type=float, default=4.0)
    p.add_argument("--max-decode-ratio", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="run both searchers under bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = Seq2Seq(args.vocab, **SIZES[args.model_size]).to(device).eval()
    g = torch.Generator().manual_seed(0)
    secs = torch.empty(args.batch).uniform_(args.min_sec, args.max_sec, generator=g)
    n_samples = (secs * 16000).long()
    wavs = torch.zeros(args.batch, int(n_samples.max()))
    for i, n in enumerate(n_samples.tolist()):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=g)
    wav_lens = (n_samples.float() / n_samples.max()).to(device)
    wavs = wavs.to(device)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    with torch.no_grad(), autocast:
        enc = model.encode(wavs, wav_lens)
    kw = dict(max_decode_ratio=args.max_decode_ratio)
    searcher = stock_searcher(model, args.beam, **kw).to(device)

    def run_stock():
        with torch.no_grad(), autocast:
            return searcher(enc, wav_lens)[0]

    def run_ours():
        with torch.no_grad(), autocast:
            return beam_search(model, enc, wav_lens, beam_size=args.beam, speechbrain_compat=True, **kw)

    def run_ours_default():
        with torch.no_grad(), autocast:
            return beam_search(model, enc, wav_lens, beam_size=args.beam, **kw)

    def run_greedy():
        with torch.no_grad(), autocast:
            return greedy_search(model, enc, wav_lens, **kw)

    print(
        f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
        f"{'GPU' if device.type == 'cuda' else 'CPUs'}, torch threads {torch.get_num_threads()}), torch "
        f"{torch.__version__}, model={args.model_size} ({count_parameters(model) / 1e6:.2f}M params, random weights), "
        f"batch={args.batch}, beam={args.beam}, audio {args.min_sec}-{args.max_sec} s, encoder frames "
        f"{enc.shape[1]} (padded), max steps {int(enc.shape[1] * args.max_decode_ratio)}, bf16={args.bf16}"
    )
    t_stock, hyp_stock = _time(run_stock, device, args.repeats, args.warmup)
    t_ours, hyp_ours = _time(run_ours, device, args.repeats, args.warmup)
    t_def, _ = _time(run_ours_default, device, args.repeats, args.warmup)
    t_greedy, _ = _time(run_greedy, device, args.repeats, args.warmup)
    agree = sum(h[0].tokens == s for h, s in zip(hyp_ours, hyp_stock))
    n = args.batch
    print(f"stock S2STransformerBeamSearcher      {1000 * t_stock / n:9.2f} ms/utt")
    print(f"slukd beam_search (speechbrain_compat) {1000 * t_ours / n:9.2f} ms/utt   speed-up x{t_stock / t_ours:.1f}")
    print(f"slukd beam_search (per-utterance len)  {1000 * t_def / n:9.2f} ms/utt   speed-up x{t_stock / t_def:.1f}")
    print(f"slukd greedy_search                    {1000 * t_greedy / n:9.2f} ms/utt")
    print(f"best hypotheses identical to stock: {agree}/{n} ({100 * agree / n:.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
