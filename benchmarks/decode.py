"""Decoding speed: slukd beam search vs SpeechBrain's S2STransformerBeamSearcher on the same model (ratio, agreement).

Builds one Seq2Seq (random weights: its hypotheses run to the maximum length, the fair worst case for both
searchers, since neither can stop early), encodes a batch of random waveforms of 2-4 s once, then times decoding only:
the stock searcher and ours, with the same settings (beam 5, batch 32, length normalisation, max_decode_ratio 1.0,
``speechbrain_compat=True`` so both run the same number of steps), median of repeats after a warm-up. Prints ms per
utterance, the ratio to stock, and how many best hypotheses agree (with stock, or with the dynamic slukd row).

Rows: the dynamic path (``static=False``; the CPU default), and the shape-static path: eagerly on CPU
("static eager"), captured in a CUDA graph on CUDA ("cuda graph": the graph is captured in the warm-up call and
replayed from the cache in the timed calls; "capture/call" clears the cache before every call, so it includes the
capture). A row that fails (e.g. a graph capture error) prints the error; the graph rows run last.

    PYTHONPATH=. python benchmarks/decode.py [--device cuda] [--model-size small|large] [--bf16] [--count-ops]

``--count-ops`` also prints the work of one shape-static step (beam and greedy): on CUDA the number of kernels
launched (what a graph replay runs), on CPU the number of top-level compute aten ops (views and no-ops left out).

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

from slukd.models.decoding import Hypothesis, beam_search, clear_graph_cache, greedy_search, stock_searcher  # noqa: E402
from slukd.models.decoding.cuda_graph import _StaticSearch  # noqa: E402
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


class _Ctx:
    """no_grad + the (optional) autocast context, re-enterable."""

    def __init__(self, autocast) -> None:
        self.autocast = autocast
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.no_grad.__enter__()
        self.autocast.__enter__()

    def __exit__(self, *exc) -> None:
        self.autocast.__exit__(*exc)
        self.no_grad.__exit__(*exc)


_NO_KERNEL = (
    "view unsqueeze transpose select slice as_strided reshape expand flatten t _reshape_alias alias unflatten squeeze "
    "empty empty_like empty_strided resize_ lift_fresh detach _unsafe_view split narrow permute result_type item "
    "_local_scalar_dense is_nonzero dropout resolve_conj scalar_tensor unbind chunk zeros to _to_copy contiguous "
    "linear layer_norm scaled_dot_product_attention masked_fill log_softmax"
).split()


def count_step_ops(model: Seq2Seq, enc: torch.Tensor, wav_lens: torch.Tensor, group: int, greedy: bool) -> int:
    """Kernels (CUDA) or top-level compute aten ops (CPU) of one eager static step, after two warm-up steps."""
    from torch.profiler import ProfilerActivity, profile

    b, steps = enc.shape[0], max(4, int(enc.shape[1]))
    runner = _StaticSearch(
        model,
        enc,
        wav_lens,
        group,
        steps,
        greedy=greedy,
        length_normalization=True,
        eos_threshold=None,
        temperature=1.0,
    )
    runner.load(enc, wav_lens, [0] * b, [steps] * b)
    runner.step()
    runner.step()
    cuda = enc.is_cuda
    _sync(enc.device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        runner.step()
        _sync(enc.device)
    events = prof.events()
    if cuda:
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    skip = {"aten::" + n for n in _NO_KERNEL}

    def top(e) -> bool:
        par = e.cpu_parent
        while par is not None:
            if par.name.startswith("aten::") and par.name not in skip:
                return False
            par = par.cpu_parent
        return True

    return sum(1 for e in events if e.name.startswith("aten::") and e.name not in skip and top(e))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model_size", "--model-size", choices=sorted(SIZES), default="small")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--min_sec", "--min-sec", type=float, default=2.0)
    p.add_argument("--max_sec", "--max-sec", type=float, default=4.0)
    p.add_argument("--max_decode_ratio", "--max-decode-ratio", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="run both searchers under bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--count_ops", "--count-ops", action="store_true", help="print the kernels / ops of one static step")
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
    n = args.batch

    def ctx():
        return _Ctx(autocast)

    def run_stock():
        with ctx():
            return searcher(enc, wav_lens)[0]

    def beam(**extra):
        def fn():
            with ctx():
                return beam_search(model, enc, wav_lens, beam_size=args.beam, **kw, **extra)

        return fn

    def greedy(**extra):
        def fn():
            with ctx():
                return greedy_search(model, enc, wav_lens, **kw, **extra)

        return fn

    def capture_per_call():
        clear_graph_cache()
        return beam(speechbrain_compat=True, cuda_graph=True)()

    print(
        f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
        f"{'GPU' if device.type == 'cuda' else 'CPUs'}, torch threads {torch.get_num_threads()}), torch "
        f"{torch.__version__}, model={args.model_size} ({count_parameters(model) / 1e6:.2f}M params, random weights), "
        f"batch={args.batch}, beam={args.beam}, audio {args.min_sec}-{args.max_sec} s, encoder frames "
        f"{enc.shape[1]} (padded), max steps {int(enc.shape[1] * args.max_decode_ratio)}, bf16={args.bf16}",
        flush=True,
    )
    if args.count_ops:
        what = "CUDA kernels" if device.type == "cuda" else "top-level compute aten ops"
        with ctx():
            n_beam = count_step_ops(model, enc, wav_lens, args.beam, greedy=False)
            n_greedy = count_step_ops(model, enc, wav_lens, 1, greedy=True)
        print(f"one static step: beam {n_beam}, greedy {n_greedy} {what}", flush=True)
    t_stock, hyp_stock = _time(run_stock, device, args.repeats, args.warmup)
    print(f"{'stock S2STransformerBeamSearcher':44s} {1000 * t_stock / n:9.2f} ms/utt", flush=True)
    ref: dict[str, list] = {}

    def row(label: str, fn, compare: str | None = None, key: str | None = None) -> None:
        """Time fn and print ms/utt, the speed-up vs stock and agreement with stock (beam rows) / the dynamic path."""
        try:
            t, out = _time(fn, device, args.repeats, args.warmup)
        except Exception as err:  # noqa: BLE001 - a failing row (e.g. graph capture) must not hide the others
            print(f"{label:44s} FAILED: {type(err).__name__}: {err}", flush=True)
            return
        best = [h[0].tokens if isinstance(h[0], Hypothesis) else h for h in out]
        if key:
            ref[key] = best
        msg = f"{label:44s} {1000 * t / n:9.2f} ms/utt   speed-up x{t_stock / t:5.1f}"
        if compare == "stock":
            agree = sum(a == b for a, b in zip(best, hyp_stock))
            msg += f"   same best as stock {agree}/{n}"
        elif compare and compare in ref:
            agree = sum(a == b for a, b in zip(best, ref[compare]))
            msg += f"   same as {compare} {agree}/{n}"
        print(msg, flush=True)

    row("slukd beam_search (speechbrain_compat)", beam(speechbrain_compat=True, static=False), "stock", "dynamic")
    row("slukd beam_search (per-utterance len)", beam(static=False), key="dynamic_len")
    row("slukd greedy_search", greedy(static=False), key="greedy")
    if device.type == "cuda":
        row(
            "slukd beam_search (static eager, compat)",
            beam(speechbrain_compat=True, static=True, cuda_graph=False),
            "stock",
        )
        # graph rows last: a failed capture can leave the CUDA context unusable
        row("slukd beam_search (cuda graph)", beam(speechbrain_compat=True, cuda_graph=True), "stock")
        row("slukd beam_search (cuda graph, capture/call)", capture_per_call, "dynamic")
        row("slukd beam_search (cuda graph, per-utt len)", beam(cuda_graph=True), "dynamic_len")
        row("slukd greedy_search (cuda graph)", greedy(cuda_graph=True), "greedy")
    else:
        row("slukd beam_search (static eager, compat)", beam(speechbrain_compat=True, static=True), "stock")
        row("slukd beam_search (static eager, per-utt len)", beam(static=True), "dynamic_len")
        row("slukd greedy_search (static eager)", greedy(static=True), "greedy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
