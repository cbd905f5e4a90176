"""Regenerate the published tables from the sweeps' own run files (never by hand).

    PYTHONPATH=. python benchmarks/publish_tables.py --slu3 results/table_slu --slu6 results/table_slu6 \
        --captioning results/table_captioning [--check]

Each table is ``slukd report`` (:func:`slukd.report.table.report_runs`) over a sweep folder, written between the
markers of its page, with a heading naming the split, the machine the runs computed on (their own device records),
the seeds and whether every run finished:

- ``docs/results_slu.md``, ``<!-- SLU3TABLE:begin/end -->``: SLURP-3 (``--paper slurp3``), and
  ``<!-- SLU6TABLE:begin/end -->``: SLURP-6 (``--paper slurp6``), every row of each sweep, joint included;
- ``docs/results_captioning.md``, ``<!-- CAPTABLE:begin/end -->``: the captioning teacher and every student row;
- ``docs/results_cross.md``, ``<!-- CROSSTABLE:begin/end -->``: ``--cross`` over the SLU and captioning sweeps.

A sweep folder that is missing is skipped with a message (its block is left as it is). A sweep with runs not finished
is refused (exit 2, naming them) unless ``--allow_incomplete``: tables are published once, when their sweeps are
complete. ``--check`` writes nothing and exits 1 when a page would change (the published tables are not those of the
runs). The README's headline tables are selected rows and columns of these, written by the same command between
``<!-- README_SLU:begin/end -->`` (SLURP-3) and ``<!-- README_CAP:begin/end -->`` (captioning), numbers unchanged.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CROSS_TITLE = "## KD terms of the core, on both tasks"
# The README's headline tables: (rows, columns) selected from the full tables, in this order.
README_SLU = (
    ("joint", "finetune", "rehearsal_herding", "rehearsal_5pct", "tok_kd", "seq_kd", "all_kd", "ewc", "lwf", "derpp"),
    ("runs", "Avg Acc (%)", "Last Acc (%)", "Avg WER (full target) (%)", "Avg SLU-F1 (%)", "Forgetting (%)",
     "Optimiser steps", "Δ Avg Acc vs finetune [95% CI]"),
)  # fmt: skip
README_CAP = (
    ("teacher", "student_supervised", "student_mse", "student_seqkd", "student_seqkd_mse", "student_seqkd_contrastive",
     "student_seqkd_contrastive_audio", "student_scarce_supervised", "student_scarce_seqkd_mse",
     "student_scarce_seqkd_mse_pool"),
    ("runs", "CIDEr-D (%)", "% of teacher (%)", "BLEU-4 (%)", "METEOR (%)", "Params (M)", "Optimiser steps"),
)  # fmt: skip


def select_table(report: str, rows: tuple[str, ...], cols: tuple[str, ...], where: str) -> str:
    """The first markdown table of ``report`` cut to ``rows`` (by method name, in that order) and ``cols`` (by header).

    A row or column that the table lacks stops with its name (the README must not silently lose a row).
    """
    lines = report.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("| method |")), None)
    if start is None:
        raise SystemExit(f"{where}: no table in the report")
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = {}
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        body[cells[0]] = cells
    missing = [c for c in cols if c not in header] + [r for r in rows if r not in body]
    if missing:
        raise SystemExit(f"{where}: the report has no {', '.join(missing)}")
    idx = [0] + [header.index(c) for c in cols]
    out = ["| " + " | ".join(header[i] for i in idx) + " |", "|" + "---|" * len(idx)]
    out += ["| " + " | ".join(body[r][i] for i in idx) + " |" for r in rows]
    return "\n".join(out) + "\n"


def replace_block(text: str, marker: str, body: str, where: str) -> str:
    """``text`` with the lines between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` replaced by ``body``."""
    pat = re.compile(rf"(<!-- {marker}:begin -->\n)(.*?)(<!-- {marker}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"{where}: no <!-- {marker}:begin --> ... <!-- {marker}:end --> block")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text, count=1)


def put(pages: dict[Path, str], page: Path, marker: str, body: str) -> None:
    """Write ``body`` into the ``marker`` block of ``page`` as ``pages`` holds it so far (else as it is on disk)."""
    pages[page] = replace_block(pages.get(page) or page.read_text(encoding="utf-8"), marker, body, str(page))


def machines(folder: Path) -> str:
    """The devices the runs under ``folder`` recorded, with counts, as the report reads them (its run summaries: an SLU
    run's last step result, a captioning run's results.json)."""
    from slukd.report.table import find_runs, summarise

    seen: Counter[str] = Counter()
    cache: dict = {}
    for run in find_runs([folder]):
        dev = summarise(run, cache)["metrics"].get("device") or {}
        if dev:
            seen[f"{dev.get('name', '?')} ({dev.get('device', '?')}, {dev.get('cpus', '?')} CPUs)"] += 1
    if not seen:
        return "machine not recorded"
    return "; ".join(f"{name}: {n} run(s)" for name, n in seen.most_common())


class Incomplete(Exception):
    """A sweep has runs left out of the means (not finished, or of other code or data)."""


def heading(title: str, folder: Path, report: str, allow_incomplete: bool = False) -> str:
    left = "Left out of every mean" in report
    if left and not allow_incomplete:
        listed = report[report.index("Left out of every mean") :].strip()
        raise Incomplete(f"{title} ({folder}): not every run finished; publish when the sweep is complete "
                         f"(or pass --allow_incomplete)\n{listed}")  # fmt: skip
    status = "some runs incomplete (listed apart below)" if left else "every run finished"
    return f"#### {title}\n\nRuns: `{folder.name}`; {status}. Machine: {machines(folder)}.\n\n"


def build(args: argparse.Namespace) -> dict[Path, str]:
    """{page: new text} for every page whose sweep folders exist."""
    from slukd.report.table import report_runs

    pages: dict[Path, str] = {}
    slu_page = REPO / "docs" / "results_slu.md"
    readme = REPO / "README.md"
    for title, folder, paper, marker in (
        ("SLURP-3", args.slu3, "slurp3", "SLU3TABLE"),
        ("SLURP-6", args.slu6, "slurp6", "SLU6TABLE"),
    ):
        if folder is None or not folder.is_dir():
            print(f"{title}: no sweep folder ({folder}); skipped", file=sys.stderr)
            continue
        report = report_runs([folder], paper=paper)
        body = heading(title, folder, report, args.allow_incomplete) + report.replace(
            "## Class-incremental SLU\n\n", "", 1
        )
        put(pages, slu_page, marker, body)
        if paper == "slurp3":
            put(pages, readme, "README_SLU", select_table(report, *README_SLU, f"{folder} (README table)"))
    if args.captioning is not None and args.captioning.is_dir():
        page = REPO / "docs" / "results_captioning.md"
        report = report_runs([args.captioning])
        body = heading("Captioning", args.captioning, report, args.allow_incomplete) + report.replace(
            "## Audio captioning\n\n", "", 1
        )
        put(pages, page, "CAPTABLE", body)
        put(pages, readme, "README_CAP", select_table(report, *README_CAP, f"{args.captioning} (README table)"))
        slu = [f for f in (args.slu3, args.slu6) if f is not None and f.is_dir()]
        if slu:
            page = REPO / "docs" / "results_cross.md"
            report = report_runs([*slu, args.captioning], cross=True)
            cross = report[report.index(CROSS_TITLE) :]
            body = f"Runs: {', '.join(f'`{f.name}`' for f in [*slu, args.captioning])}.\n\n" + cross
            put(pages, page, "CROSSTABLE", body)
    else:
        print(f"captioning: no sweep folder ({args.captioning}); skipped", file=sys.stderr)
    return pages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slu3", type=Path, default=None, help="the SLURP-3 sweep folder (slukd sweep slu --out)")
    p.add_argument("--slu6", type=Path, default=None, help="the SLURP-6 sweep folder")
    p.add_argument("--captioning", type=Path, default=None, help="the captioning sweep folder")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page would change")
    p.add_argument("--allow_incomplete", action="store_true", help="publish even with runs not finished")
    args = p.parse_args(argv)
    changed = []
    try:
        pages = build(args)
    except Incomplete as err:
        print(err, file=sys.stderr)
        return 2
    for page, text in pages.items():
        if page.read_text(encoding="utf-8") != text:
            changed.append(page)
            if not args.check:
                page.write_text(text, encoding="utf-8")
    for page in changed:
        print(f"{'would change' if args.check else 'updated'}: {page.relative_to(REPO)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
