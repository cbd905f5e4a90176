"""Reports of both recipes: per-run continual reports (:mod:`.continual`) and the cross-run table
(:mod:`.table`, ``slukd report PATH... [--out DIR]``)."""

from __future__ import annotations

import argparse
import sys

from slukd.report.continual import (
    backward_transfer,
    forgetting,
    load_steps,
    matrix,
    summarise_run,
    write_run_report,
)
from slukd.report.table import ReportError, aggregate, find_runs, format_table, report_runs, summarise, within_spread

__all__ = ["ReportError", "aggregate", "backward_transfer", "cli_main", "find_runs", "forgetting", "format_table",
           "load_steps", "matrix", "report_runs", "summarise", "summarise_run", "within_spread",
           "write_run_report"]  # fmt: skip


def cli_main(argv: list[str], prog: str = "slukd report") -> int:
    """``slukd report PATH... [--out DIR]``: the results tables of every run under PATH (both recipes)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Tables of finished runs (mean ± std over seeds; runs differing only in the seed form a row; "
        "paired 95% intervals behind every ranking and claim). Incomplete and --debug runs are listed apart, never "
        "averaged; runs of different code or data are separate rows. Reads run folders only; writes only to --out. "
        "Both recipes.",
        epilog="example: slukd report results/table_slu/slurp3 results/table_slu/joint --paper slurp3",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("paths", nargs="+", help="run folders, or folders containing run folders")
    p.add_argument("--out", default=None, help="also write table_<kind>.md/.csv (and acc_per_step.png) here")
    p.add_argument(
        "--paper",
        choices=["slurp3", "slurp6"],
        default=None,
        help="SLU: add the paper's numbers for this scenario beside the table, and its claims checked",
    )
    p.add_argument(
        "--cross",
        action="store_true",
        help="add the cross table: every KD term on both tasks and the continual methods against their baselines "
        "(give the SLU and the captioning sweep folders together)",
    )
    args = p.parse_args(argv)
    try:
        print(report_runs(args.paths, args.out, paper=args.paper, cross=args.cross), end="")
    except ReportError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
