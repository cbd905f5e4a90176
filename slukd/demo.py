"""The main job (``make demo`` / ``slukd demo``): class-incremental SLURP-3 on the built-in demo corpus.

Synthesises the demo corpus on first use (``data/slu_demo``, reused after), then runs, through the sweep driver
(:mod:`slukd.sweep`), the rows joint (upper bound), fine-tuning (lower bound), rehearsal (1% iCaRL herding memory:
the paper's base for KD) and rehearsal + seq-KD for the seeds into ``results/demo`` (a rerun resumes unfinished
runs and skips finished ones; the rows share their first task), and prints the paper-style table (mean ± std over
seeds) with wall times and peak memory.

``slukd demo --tiny`` (``make tiny``) is the one-minute example: the same four rows and three tasks on the tiny
corpus (``data/slu_tiny``) with the tiny model of ``hparams/slurp_incremental/base_tiny.yaml``, into
``results/demo_tiny``. It shows the whole pipeline; its numbers say nothing about the methods.

Every run's settings are checked before the corpus is made or any run starts (:func:`slukd.sweep.check_plan`).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_ROWS = ["joint", "finetune", "rehearsal_herding", "seq_kd"]

#: Settings of the demo scale (on top of each row file and base.yaml): 10 epochs for the first task (about 1,000
#: steps of batch 8, where benchmarks/slu_learning_curve.py shows the default model passing 85% intent accuracy) and
#: 5 for the later tasks (they start from a trained model). Memory sizes are the rows' own (1% of the training set).
DEMO_OVERRIDES = {"corpus": "demo", "tier": "demo", "number_of_epochs": 10, "later_task_epochs": 5}
#: The one-minute example: every setting but the corpus kind comes from base_tiny.yaml (tier tiny, a 32-dim model).
TINY_OVERRIDES = {"base": "base_tiny.yaml", "corpus": "demo", "tier": "tiny"}


def cli_main(argv: list[str] | None = None, prog: str = "slukd demo") -> int:
    """``slukd demo [--seeds ...] [--jobs N]`` (see the module docstring)."""
    from slukd.sweep import plan_slu, run_local, write_reports

    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: slukd demo --tiny   (the one-minute example; slukd demo: the main job, about 10 minutes)",
    )
    p.add_argument("--tiny", action="store_true", help="the one-minute example (tiny corpus and model)")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="row names (files of hparams/slurp_incremental)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (the table averages over them)")
    p.add_argument("--out", default=None, help="results folder (default results/demo, --tiny: results/demo_tiny)")
    p.add_argument("--data", default=None, help="corpus folder, made on first use (default data/slu_demo or slu_tiny)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra recipe overrides for all runs")
    p.add_argument("--noprogressbar", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (2: one per core of a 2-core machine)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / jobs)")
    args = p.parse_args(argv)
    from slukd.data.synth_slu import synthesize_slu_corpus
    from slukd.sweep import _overrides, check_plan
    from slukd.utils.logging import setup_logging

    setup_logging()
    out = Path(args.out or ("results/demo_tiny" if args.tiny else "results/demo")).resolve()
    data = Path(args.data or ("data/slu_tiny" if args.tiny else "data/slu_demo")).resolve()
    t_start = time.perf_counter()
    base = TINY_OVERRIDES if args.tiny else DEMO_OVERRIDES
    settings = {**base, "data_folder": str(data), "first_task_cache": str(out / "first_task_cache")}
    for arg in _overrides(args.set, []):  # --set KEY=VALUE replaces a demo setting of the same key
        key, value = arg[2:].split("=", 1)
        settings[key] = value
    overrides = [f"--{k}={v}" for k, v in settings.items()] + ["--noprogressbar"]
    plan = plan_slu(args.rows, args.seeds, ["slurp3"], out, overrides)
    check_plan(plan)  # every run's settings, before the corpus is made or any run starts
    # the corpus is made once here, before runs start in parallel (each run would otherwise try to make it)
    synthesize_slu_corpus(data, tier=str(settings["tier"]), seed=int(settings.get("corpus_seed", 0)),
                          progress=not args.noprogressbar, replace=False)  # fmt: skip
    jobs = max(1, args.jobs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    logger.info("demo: %d runs, %d at a time, %d torch thread(s) each", len(plan), jobs, threads)
    status = run_local(plan, jobs, threads, log_dir=out / "logs")
    failed = [n for n, rc in status.items() if rc != 0]
    for n in failed:
        print(f"{prog}: run {n} failed; rerun the same command to resume (log: {out / 'logs'})", file=sys.stderr)
    if failed:
        return 1
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    table = write_reports("slu", out, ["slurp3"])
    total = time.perf_counter() - t_start
    print()
    corpus = "tiny corpus and model (pipeline check; numbers mean nothing)" if args.tiny else "demo corpus"
    print(f"Class-incremental SLURP-3 on the built-in {corpus} (seeds {' '.join(map(str, args.seeds))}):")
    print()
    print(table)
    print(f"total wall time {total:.0f} s ({jobs} run(s) at a time, {threads} thread(s) each); peak memory of one "
          f"run {peak_mb:.0f} MiB")  # fmt: skip
    print(f"tables and figures: {out}/slurp3/table_continual.md, acc_per_step.png; per run: report.md")
    return 0


if __name__ == "__main__":  # make demo / make tiny: through the CLI (a user error is one line, exit status 2)
    from slukd.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
