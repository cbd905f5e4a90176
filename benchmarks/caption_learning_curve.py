"""Captioning learning curves: validation CIDEr-D against epochs, steps and training minutes of finished runs.

    python benchmarks/caption_learning_curve.py results/captioning_kd/demo/seed0/teacher [RUN ...] [--plot curve.png]

Reads each run's ``train/history.json`` (written after every epoch by slukd.captioning.train) and prints one line
per validated epoch; the minutes are wall-clock training time on the machine that ran it (not a goal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_history(run: Path) -> list[dict]:
    path = run / "train" / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {run} a captioning run folder?)")
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--plot", default=None, help="write a PNG of CIDEr-D against training minutes")
    args = p.parse_args(argv)
    curves = {}
    for run in map(Path, args.runs):
        try:
            hist = load_history(run)
        except FileNotFoundError as err:
            print(err, file=sys.stderr)
            return 2
        curves[run.name] = hist
        print(f"## {run}")
        print(f"{'epoch':>5s} {'step':>6s} {'minutes':>8s} {'loss_sup':>9s} {'valid CIDEr-D':>14s}")
        for h in hist:
            if "valid_CIDEr_D" in h:
                print(
                    f"{h['epoch']:5d} {h['step']:6d} {h['train_minutes']:8.2f} {h.get('loss_sup', float('nan')):9.3f}"
                    f" {h['valid_CIDEr_D']:14.3f}"
                )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, hist in curves.items():
            pts = [(h["train_minutes"], h["valid_CIDEr_D"]) for h in hist if "valid_CIDEr_D" in h]
            ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xlabel("training minutes")
        ax.set_ylabel("validation CIDEr-D (greedy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
