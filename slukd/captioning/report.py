"""The captioning results table across rows: ``python -m slukd.captioning.report RUN_DIR [RUN_DIR ...] --out DIR``.

Each run folder holds ``results.json`` (written by :func:`slukd.captioning.run.run`). The table has one line per
row with its KD settings, the test metrics, CIDEr-D as a percentage of the teacher's (when a teacher row is among
the runs), parameters and training cost; written as ``captioning_results.csv`` and ``captioning_results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import pandas as pd

from slukd.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

COLUMNS = [
    "row", "role", "kd", "captioned_fraction", "audio_only", "params_M", "BLEU_1", "BLEU_4", "METEOR", "ROUGE_L",
    "CIDEr_D", "SPIDEr", "CIDEr_D_vs_teacher_%", "epochs", "steps", "train_minutes",
]  # fmt: skip


def find_runs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run folders: each path itself when it holds results.json, else every results.json below it."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "results.json").is_file():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(r.parent for r in p.rglob("results.json"))
        else:
            raise FileNotFoundError(f"{p}: no such run folder")
    return runs


def collect(paths: list[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for run in find_runs(paths):
        path = run / "results.json"
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
        m = r.get("test", {})
        rows.append(
            {
                "row": r.get("row", run.name),
                "role": r.get("role"),
                "kd": r.get("kd", ""),
                "captioned_fraction": r.get("captioned_fraction", 1.0),
                "audio_only": r.get("audio_only", False),
                "params_M": round(r.get("params", 0) / 1e6, 2),
                **{k: m.get(k) for k in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr_D", "SPIDEr")},
                "epochs": r.get("epochs"),
                "steps": r.get("steps"),
                "train_minutes": r.get("train_minutes"),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"no results.json found under {[str(p) for p in paths]}")
    teacher = df[df["role"] == "teacher"]
    if len(teacher) and teacher["CIDEr_D"].iloc[0]:
        df["CIDEr_D_vs_teacher_%"] = (100 * df["CIDEr_D"] / teacher["CIDEr_D"].iloc[0]).round(1)
    else:
        df["CIDEr_D_vs_teacher_%"] = None
    return df[COLUMNS]


def to_markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "–"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def write_report(paths: list[str | os.PathLike], out_dir: str | os.PathLike) -> pd.DataFrame:
    df = collect(paths)
    out = Path(out_dir)
    atomic_write_text(out / "captioning_results.csv", df.to_csv(index=False))
    atomic_write_text(out / "captioning_results.md", to_markdown(df))
    return df


def cli_main(argv: list[str], prog: str = "python -m slukd.captioning.report") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders or folders above them")
    p.add_argument("--out", default=None, help="where to write the CSV/Markdown (default: the first path)")
    args = p.parse_args(argv)
    try:
        df = write_report(args.runs, args.out or args.runs[0])
    except (FileNotFoundError, ValueError) as err:
        print(f"{prog}: error: {err}")
        return 2
    print(to_markdown(df))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(cli_main(sys.argv[1:]))
