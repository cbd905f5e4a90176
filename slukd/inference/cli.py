"""``slukd understand``, ``slukd caption`` and ``slukd export``: the command line of :mod:`slukd.inference`.

    slukd understand RUN_DIR a.wav b.wav [--task K] [--json] [--out preds.jsonl]
    slukd caption RUN_DIR clip.wav [--json]
    slukd export RUN_DIR --out DIR [--task K]

An unusable audio file is reported on stderr (one line naming it and why) and the other files are decoded; the
exit status is then 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from slukd.inference.api import InferenceError, SLUModel, from_run, run_kind
from slukd.inference.export import EXPORT_CLASSES, export_run

logger = logging.getLogger(__name__)

__all__ = ["cli_main", "format_prediction"]


EXAMPLES = {
    "understand": "example: slukd understand results/demo/joint/seed0 a.wav b.wav --json",
    "caption": "example: slukd caption results/table_captioning/seed0/student_seqkd_mse clip.wav --json",
    "export": "example: slukd export results/demo/joint/seed0 --out exported/slu_joint",
}


def _parser(prog: str, mode: str) -> argparse.ArgumentParser:
    if mode == "understand":
        desc = (
            "SLU predictions for audio files with a finished SLU run: one line per file (file, intent, entities, "
            "transcript); --json prints SLURP prediction-format JSON lines instead (file, scenario, action, "
            "entities, plus intent, transcript and the decoded text)."
        )
    elif mode == "caption":
        desc = "Captions for audio files with a finished captioning run: one 'file<TAB>caption' line per file."
    else:
        desc = (
            "Write a finished run's model as a folder SpeechBrain's pretrained interfaces load (foreign_class), with "
            "its tokenizer or vocabulary, custom_interface.py and a model card (README.md)."
        )
    p = argparse.ArgumentParser(prog=prog, description=desc, epilog=EXAMPLES[mode],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", help="the run folder (output_folder of the recipe)")
    if mode == "export":
        p.add_argument("--out", required=True, help="the folder to write (created; an earlier export is replaced)")
        p.add_argument("--task", type=int, default=None, help="SLU: this finished task's model (default: the last)")
        return p
    p.add_argument("audio", nargs="*", help="audio files (any rate, mono or multi-channel)")
    if mode == "understand":
        p.add_argument("--task", type=int, default=None, help="use this finished task's model (default: the last)")
    p.add_argument("--out", default=None, help="also write the results here as JSON lines (atomically)")
    p.add_argument("--json", action="store_true", help="print JSON lines" + (" (SLURP prediction format)"
                                                                          if mode == "understand" else ""))  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch_size", type=int, default=8, help="files decoded together")
    p.add_argument("--beam_size", type=int, default=None, help="beam size (default: the run's test_beam_size)")
    p.add_argument("--export", default=None, metavar="OUT_DIR", help="also export the model (as slukd export --out)")
    if mode == "caption":
        p.add_argument("--onnx", default=None, metavar="DIR", help="decode with this ONNX export of the run's model "
                       "(python -m slukd.export.onnx_student RUN_DIR DIR; needs onnxruntime)")  # fmt: skip
        p.add_argument("--int8", action="store_true", help="with --onnx: its int8-quantised graphs")
    return p


def format_prediction(r: dict[str, Any]) -> str:
    """One readable line: ``file  intent  [type: filler; ...]  "transcript"``."""
    ents = "; ".join(f"{e['type']}: {e['filler']}" for e in r.get("entities", []))
    return f'{r["file"]}  {r["intent"]}  [{ents}]  "{r["transcript"]}"'


def cli_main(argv: list[str], prog: str = "slukd understand", mode: str = "understand") -> int:
    """``slukd understand RUN_DIR AUDIO... [--task K] [--json] [--out F] [--device D] [--batch_size N]
    [--beam_size N] [--export DIR]``, ``slukd caption RUN_DIR AUDIO... [...]`` and ``slukd export RUN_DIR --out DIR
    [--task K]`` (see the module docstring)."""
    if mode not in ("understand", "caption", "export"):
        raise ValueError(f"mode must be 'understand', 'caption' or 'export', got {mode!r}")
    args = _parser(prog, mode).parse_args(argv)
    if mode == "export":
        kind = run_kind(args.run_dir)
        out = export_run(args.run_dir, args.out, task=args.task)
        print(f"exported to {out} (interface {EXPORT_CLASSES[kind]} in custom_interface.py; model card README.md)")
        return 0
    return _run_cli(args, mode, prog)


def _run_cli(args: argparse.Namespace, mode: str, prog: str) -> int:
    want = "slu" if mode == "understand" else "captioning"
    kind = run_kind(args.run_dir)
    if kind != want:
        other = "slukd caption" if kind == "captioning" else "slukd understand"
        raise InferenceError(f"{args.run_dir}: this is a {kind} run; use {other}")
    task = getattr(args, "task", None)
    if not args.audio and not args.export:
        raise InferenceError("give audio files to decode, or --export OUT_DIR")
    if args.export:
        out = export_run(args.run_dir, args.export, task=task)
        print(f"exported to {out} (interface {EXPORT_CLASSES[kind]} in custom_interface.py)", file=sys.stderr)
    if not args.audio:
        return 0
    model = from_run(args.run_dir, task=task, device=args.device, beam_size=args.beam_size,
                     batch_size=args.batch_size)  # fmt: skip
    if getattr(args, "onnx", None):
        from slukd.export.onnx_student import use_onnx

        try:
            use_onnx(model, args.onnx, int8=args.int8)
        except (ValueError, FileNotFoundError, ImportError) as err:
            raise InferenceError(str(err)) from err
    if isinstance(model, SLUModel):
        rows = model.understand(list(args.audio), on_error="skip")
    else:
        rows = model.caption_results(list(args.audio))
    bad = [r for r in rows if "error" in r]
    for r in rows:
        if "error" in r:
            print(f"{prog}: skipped {r['file']}: {r['error']}", file=sys.stderr, flush=True)
        elif args.json:
            print(json.dumps(r, ensure_ascii=False), flush=True)
        else:
            print(format_prediction(r) if kind == "slu" else f"{r['file']}\t{r['caption']}", flush=True)
    if args.out:
        from slukd.utils.io import atomic_write_jsonl

        atomic_write_jsonl(args.out, [r for r in rows if "error" not in r])
        logger.info("%d results written to %s", len(rows) - len(bad), args.out)
    return 2 if bad else 0
