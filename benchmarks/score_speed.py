"""SLURP scoring speed: load + score the full test set (13,078 recordings) for each published prediction file."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from slukd.metrics.slurp_scorer import score_slurp_files

LIMIT_S = 2.0


def main(argv: list[str] | None = None) -> int:
    shared = Path(os.environ.get("SLUKD_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gold", default=str(shared / "slurp" / "test.jsonl"))
    ap.add_argument("--pred_dir", "--pred-dir", default=str(shared / "slurp" / "predictions"))
    ap.add_argument("--repeat", type=int, default=3, help="runs per file; the best is reported")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    preds = sorted(Path(args.pred_dir).glob("*.jsonl"))
    if not Path(args.gold).is_file() or not preds:
        print(f"no gold ({args.gold}) or predictions ({args.pred_dir}): nothing to time")
        return 1
    worst = 0.0
    for pred in preds:
        gold_keyed = pred.name.startswith("gold_")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            s = score_slurp_files(args.gold, pred, gold_transcripts=gold_keyed)
            times.append(time.perf_counter() - t0)
        best = min(times)
        worst = max(worst, best)
        print(f"{pred.name:<40} {s.n_gold:>6} gold items  load+score {best:6.3f} s  (SLU-F1 {100 * s.slu_f1:.2f})")
    ok = worst < LIMIT_S
    print(f"slowest file: {worst:.3f} s ({'under' if ok else 'OVER'} the {LIMIT_S} s budget)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
