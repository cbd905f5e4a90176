"""The captioning results table across rows: ``python -m slukd.captioning.report RUN_DIR [RUN_DIR ...] --out DIR``.

Each run folder holds ``results.json`` (written by :func:`slukd.captioning.run.run`). The table has one line per
run with its KD settings, the test metrics, CIDEr-D as a percentage of the teacher's (the mean teacher CIDEr-D when
teacher runs are among the runs), parameters and training cost; written as ``captioning_results.csv`` and
``captioning_results.md``. When a row was run with several seeds, ``captioning_summary.{csv,md}`` add one line per
row: the number of seeds and mean ± std (sample std, ddof 1) of each metric over them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path

import pandas as pd

from slukd.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

COLUMNS = [
    "row", "seed", "role", "kd", "captioned_fraction", "audio_only", "params_M", "BLEU_1", "BLEU_4", "METEOR",
    "ROUGE_L", "CIDEr_D", "SPIDEr", "CIDEr_D_vs_teacher_%", "epochs", "steps", "train_minutes",
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
                "seed": r.get("seed", _seed_from_path(run)),
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
    df["seed"] = df["seed"].astype("Int64")
    teacher = df.loc[df["role"] == "teacher", "CIDEr_D"].dropna()
    if len(teacher) and teacher.mean() > 0:
        df["CIDEr_D_vs_teacher_%"] = (100 * df["CIDEr_D"] / teacher.mean()).round(1)
    else:
        df["CIDEr_D_vs_teacher_%"] = None
    return df[COLUMNS]


def _seed_from_path(run: Path) -> int | None:
    """The seed of a run folder laid out as ``.../seed<N>/<row>`` (results.json files older than the seed field)."""
    for part in reversed(run.parts):
        m = re.fullmatch(r"seed(\d+)", part)
        if m:
            return int(m.group(1))
    return None


SUMMARY_METRICS = ["BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr_D", "CIDEr_D_vs_teacher_%"]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One line per row: ``n_seeds`` and ``<metric>_mean`` / ``<metric>_std`` (ddof 1; NaN for one seed)."""
    keys = ["row", "role", "kd", "captioned_fraction", "audio_only", "params_M", "steps"]
    out = []
    for _, g in df.groupby("row", sort=False):
        line = {k: g[k].iloc[0] for k in keys}
        line["n_seeds"] = int(len(g))
        for m in SUMMARY_METRICS:
            v = pd.to_numeric(g[m], errors="coerce")
            line[f"{m}_mean"] = v.mean()
            line[f"{m}_std"] = v.std(ddof=1) if len(v.dropna()) > 1 else float("nan")
        out.append(line)
    return pd.DataFrame(out)


def summary_markdown(s: pd.DataFrame) -> str:
    """Markdown of :func:`summarise`: ``mean ± std`` cells."""

    def cell(mean, std, pct=False):
        if pd.isna(mean):
            return "–"
        f = "{:.1f}" if pct else "{:.3f}"
        return f.format(mean) + ("" if pd.isna(std) else " ± " + f.format(std))

    cols = ["row", "kd", "captioned_fraction", "audio_only", "n_seeds"] + SUMMARY_METRICS
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    lines = []
    for d in s.to_dict("records"):
        vals = [str(d["row"]), str(d["kd"]), f"{d['captioned_fraction']:g}", str(d["audio_only"]), str(d["n_seeds"])]
        vals += [cell(d[f"{m}_mean"], d[f"{m}_std"], pct="%" in m) for m in SUMMARY_METRICS]
        lines.append("| " + " | ".join(vals) + " |\n")
    return head + "".join(lines)


def to_markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)):
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
    if df.groupby("row").size().max() > 1:
        s = summarise(df)
        atomic_write_text(out / "captioning_summary.csv", s.to_csv(index=False))
        atomic_write_text(out / "captioning_summary.md", summary_markdown(s))
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
    if df.groupby("row").size().max() > 1:
        print(summary_markdown(summarise(df)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(cli_main(sys.argv[1:]))
