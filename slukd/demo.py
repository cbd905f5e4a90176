"""The main job (``make demo`` / ``python -m slukd.demo``): class-incremental SLURP-3 on the built-in demo corpus.

Synthesises the demo corpus on first use (``data/slu_demo``, reused after), then runs the rows fine-tuning,
rehearsal (random memory), rehearsal + seq-KD and the joint upper bound (``--rows`` chooses) for the seeds into
``results/demo/<row>/seed<k>`` (one subprocess per run: a rerun resumes unfinished runs and skips finished ones),
and prints the paper-style table (mean ± std over seeds) with wall times and peak memory.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from slukd.report import report_runs

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
HPARAMS = REPO / "hparams" / "slurp_incremental"
DEFAULT_ROWS = ["joint", "finetune", "rehearsal_random", "seq_kd"]

#: Settings of the demo scale (on top of each row file and base.yaml): 10 epochs for the first task (about 1,000
#: steps of batch 8, where benchmarks/slu_learning_curve.py shows the default model passing 85% intent accuracy), 5 for
#: the later tasks (they start from a trained model), and a memory of 8 recordings per scenario.
DEMO_OVERRIDES = {
    "corpus": "demo",
    "demo_tier": "demo",
    "number_of_epochs": 10,
    "later_task_epochs": 5,
    "memory_per_class": 8,
}


def run_command(row: str, seed: int, out: Path, data: Path, extra: dict) -> list[str]:
    """The recipe command line of one demo run."""
    opts = {**DEMO_OVERRIDES, **extra, "seed": seed, "data_folder": str(data), "output_folder": str(out)}
    return [
        sys.executable,
        str(REPO / "recipes" / "slurp_incremental.py"),
        str(HPARAMS / f"{row}.yaml"),
        *[f"--{k}" if v is True else f"--{k}={v}" for k, v in opts.items()],
    ]


def _parse_extra(pairs: list[str]) -> dict:
    extra = {}
    for p in pairs:
        if "=" not in p:
            raise SystemExit(f"--set expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        extra[k] = v
    return extra


def cli_main(argv: list[str] | None = None, prog: str = "python -m slukd.demo") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated row names (hparams files)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (the table averages over them)")
    p.add_argument("--out", default="results/demo", help="results folder")
    p.add_argument("--data", default="data/slu_demo", help="demo corpus folder (generated on first use)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra hparams overrides for all runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core of a 2-core machine)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / jobs)")
    args = p.parse_args(argv)
    from slukd.utils.logging import setup_logging

    setup_logging()
    rows = [r for r in args.rows.split(",") if r]
    for r in rows:
        if not (HPARAMS / f"{r}.yaml").is_file():
            print(f"{prog}: unknown row {r!r} (no {HPARAMS / (r + '.yaml')})", file=sys.stderr)
            return 2
    extra = _parse_extra(args.set)
    if args.quiet:
        extra["noprogressbar"] = True
    out_root, data = Path(args.out).resolve(), Path(args.data).resolve()
    t_start = time.perf_counter()
    # the corpus is made once here, before runs start in parallel (each run would otherwise try to make it)
    from slukd.data.synth_slu import synthesize_slu_corpus

    synthesize_slu_corpus(data, tier=extra.get("demo_tier", DEMO_OVERRIDES["demo_tier"]), seed=0)
    jobs = max(1, args.jobs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    queue = [(row, seed) for seed in args.seeds for row in rows]
    running: dict[tuple[str, int], tuple[subprocess.Popen, float]] = {}
    walls: dict[tuple[str, int], float] = {}
    failed: list[tuple[str, int, int]] = []
    logger.info("demo: %d runs, %d at a time, %d torch thread(s) each", len(queue), jobs, threads)
    while queue or running:
        while queue and len(running) < jobs:
            row, seed = queue.pop(0)
            run_dir = out_root / row / f"seed{seed}"
            logger.info("demo: %s seed %d -> %s", row, seed, run_dir)
            proc = subprocess.Popen(run_command(row, seed, run_dir, data, extra), env=env)
            running[(row, seed)] = (proc, time.perf_counter())
        time.sleep(0.5)
        for key, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                walls[key] = time.perf_counter() - t0
                del running[key]
                if proc.returncode != 0:
                    failed.append((*key, proc.returncode))
    if failed:
        for row, seed, rc in failed:
            print(
                f"{prog}: run {row} seed {seed} failed (exit {rc}); rerun the same command to resume", file=sys.stderr
            )
        return failed[0][2]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    table = report_runs([out_root], out_dir=out_root)
    total = time.perf_counter() - t_start
    print()
    print("Class-incremental SLURP-3 on the built-in demo corpus (percent; mean ± std over seeds "
          f"{' '.join(map(str, args.seeds))}):")  # fmt: skip
    print()
    print(table)
    print("wall time per run (this invocation): " + ", ".join(f"{r}/seed{s} {w:.0f} s" for (r, s), w in walls.items()))
    print(
        f"total wall time {total:.0f} s ({jobs} run(s) at a time, {threads} thread(s) each); "
        f"peak memory of one run {peak_mb:.0f} MiB (at most {jobs * peak_mb:.0f} MiB for {jobs} at a time)"
    )
    print(f"tables and figures: {out_root}/table.md, {out_root}/acc_per_step.png, per run: report.md")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
