"""The deployable captioning student: PyTorch vs its ONNX export (onnxruntime, fp32 and dynamic int8), in one run.

    PYTHONPATH=. python benchmarks/deploy_speed.py --threads 1                       # the paper's student, random
    PYTHONPATH=. python benchmarks/deploy_speed.py --run RUN_DIR --cider --threads 1 # a trained run: + CIDEr-D

Speed: the same protocol as ``benchmarks/caption_speed.py`` (deterministic ``--seconds`` clips, batched beam-3
search with a key/value cache, exactly ``--max_len`` tokens per clip, medians over ``--repeats`` passes with the
variants alternating, after a warm-up), at each of ``--batch_sizes`` (default 1, 8, 64). Variants: ``torch`` (the
model as trained, eval, inference mode), ``torch-opt`` (:func:`slukd.models.inference_opt.optimize_for_inference`:
batch-norm folding, conv/linear + activation fusion, in-place activations), ``onnx`` (the export on onnxruntime,
fp32) and ``onnx-int8`` (its decoding step dynamically int8-quantised; ``--int8_all``: every graph).
Ratios are ``torch ms / variant ms`` per clip. The student is the paper's (EfficientNet-B2 + 2-layer decoder, 4400
words, random weights; ``--preset paper_real`` of caption_speed) or, with ``--run``, a finished captioning run's
model.

``--cider`` (with ``--run``): captions of the run's whole test split (its manifest, beam and length limit) by
``torch``, ``onnx`` and ``onnx-int8``, scored with CIDEr-D (pycocoevalcap, the run's tokenisation), and how many
captions differ from the PyTorch ones. Needs the ``deploy`` extra (onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from caption_speed import make_clips, run_once  # noqa: E402

from slukd.export.onnx_student import GRAPHS, INT8_GRAPHS, OnnxStudent, export_student, quantize_folder  # noqa: E402
from slukd.models.inference_opt import optimize_for_inference  # noqa: E402


def _student(run: str | None) -> tuple[torch.nn.Module, int]:
    """(model, sample rate): a run's model, or the paper's student with random weights (seed 0)."""
    if run:
        from slukd.utils.model_io import load_model, read_model_spec

        spec = read_model_spec(Path(run))
        return load_model(Path(run), Path(run) / "model.ckpt", device="cpu").eval(), int(spec.get("sample_rate", 16000))
    from slukd.models.paper_caption import paper_student

    torch.manual_seed(0)
    return paper_student(4400, {"dropout": 0.0}).eval(), 16000


def _cider(run: str, variants: dict, batch_size: int) -> None:
    from slukd.data.captions import read_manifest
    from slukd.inference import Captioner
    from slukd.metrics.caption import caption_metrics

    rows = read_manifest(Path(run) / "manifests/test.csv")
    refs = {r["ID"]: list(r["captions"]) for r in rows}
    files = [r["wav"] for r in rows]
    base = None
    print(f"CIDEr-D on {run}: test split, {len(files)} clips")
    for name, model in variants.items():
        cap = Captioner(run, batch_size=batch_size)
        if model is not None:
            cap.model, cap.precision = model, "fp32"
        t0 = time.perf_counter()
        caps = cap.caption_files(files)
        secs = time.perf_counter() - t0
        preds = {r["ID"]: c for r, c in zip(rows, caps)}
        m = caption_metrics(preds, refs, meteor=False)
        diff = "" if base is None else f"  captions differing from torch: {sum(a != b for a, b in zip(caps, base))}"
        base = base or caps
        print(f"  {name:10s} CIDEr-D {100 * m['CIDEr_D']:7.2f}  BLEU-4 {100 * m['BLEU_4']:6.2f}  ({secs:.1f} s){diff}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a finished captioning run (default: the paper's student, random)")
    p.add_argument("--onnx_dir", default=None, help="export here (default: a temporary folder)")
    p.add_argument("--batch_sizes", default="1,8,64")
    p.add_argument("--n_clips", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--max_len", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--cider", action="store_true", help="also CIDEr-D on the run's test split (needs --run)")
    p.add_argument("--no_speed", action="store_true", help="skip the speed part")
    p.add_argument("--int8_all", action="store_true", help="quantise every graph (default: the decoding step)")
    args = p.parse_args(argv)
    if args.cider and not args.run:
        p.error("--cider needs --run")
    torch.set_num_threads(args.threads)
    model, sr = _student(args.run)
    opt = copy.deepcopy(model)
    optimize_for_inference(opt)
    folder = Path(args.onnx_dir or tempfile.mkdtemp(prefix="slukd_onnx_"))
    t0 = time.perf_counter()
    export_student(model, folder, sample_rate=sr, max_positions=max(64, args.max_len + 2))
    t1 = time.perf_counter()
    quantize_folder(folder, GRAPHS if args.int8_all else INT8_GRAPHS)
    t2 = time.perf_counter()
    sizes = {g: (folder / f"{g}.onnx").stat().st_size for g in ("encoder", "init", "step")}
    sizes_q = {g: (folder / f"{g}.int8.onnx" if (folder / f"{g}.int8.onnx").is_file() else folder / f"{g}.onnx")
               .stat().st_size for g in GRAPHS}  # fmt: skip
    print(f"student: {'run ' + args.run if args.run else 'paper EfficientNet-B2 + 2-layer decoder (random)'}, "
          f"{sum(q.numel() for q in model.parameters()) / 1e6:.2f}M parameters; export {t1 - t0:.1f} s, int8 "
          f"{t2 - t1:.1f} s; ONNX {sum(sizes.values()) / 1e6:.1f} MB, int8 {sum(sizes_q.values()) / 1e6:.1f} MB; "
          f"threads {args.threads}; {folder}")  # fmt: skip
    variants = {
        "torch": model,
        "torch-opt": opt,
        "onnx": OnnxStudent(folder, threads=args.threads),
        "onnx-int8": OnnxStudent(folder, int8=True, threads=args.threads),
    }
    if not args.no_speed:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        summary = []
        for bs in batch_sizes:
            n = max(args.n_clips, bs)
            clips = make_clips(n, args.seconds)
            run = (bs, args.beam, args.max_len, torch.device("cpu"), False)
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
            for m in variants.values():
                run_once(m, clips[:bs], *run)
            for _ in range(args.repeats):
                for k, m in variants.items():
                    times[k].append(run_once(m, clips, *run))
            ms = {}
            print(f"batch {bs} ({n} clips, {args.seconds:g} s, beam {args.beam}, {args.max_len} tokens)")
            for k in variants:
                enc = statistics.median(t[0] for t in times[k]) * 1000 / n
                dec = statistics.median(t[1] for t in times[k]) * 1000 / n
                ms[k] = statistics.median(t[0] + t[1] for t in times[k]) * 1000 / n
                print(f"  {k:10s} enc {enc:8.1f}  dec {dec:7.1f}  total {ms[k]:8.1f} ms/clip  "
                      f"speed-up vs torch {ms['torch'] / ms[k]:5.2f}x")  # fmt: skip
            summary.append((bs, ms))
        print(f"{'batch':>5s} " + " ".join(f"{k:>16s}" for k in variants) + "   (ms/clip; ratio vs torch)")
        for bs, ms in summary:
            print(f"{bs:5d} " + " ".join(f"{ms[k]:9.1f} {ms['torch'] / ms[k]:5.2f}x" for k in variants))
    if args.cider:
        _cider(args.run, {"torch": None, "onnx": variants["onnx"], "onnx-int8": variants["onnx-int8"]}, 8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
