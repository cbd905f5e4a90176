"""SLU: epoch time of a KD run (seq-KD by default) over the rehearsal run's, on the same task (target <= 1.3).

Both runs train task 1 identically; KD acts from task 2 on. The script runs the two rows for two tasks with a few
epochs (or reads existing run folders with --runs) and prints, for task 2: the mean epoch time of each, their ratio,
and the ratio including the teacher's one-off pseudo-labelling of the memory (amortised over the task's epochs).

    python benchmarks/slu_kd_epoch_ratio.py                      # demo corpus, 2 epochs per task
    python benchmarks/slu_kd_epoch_ratio.py --kd-row all_kd --epochs 3
    python benchmarks/slu_kd_epoch_ratio.py --runs results/demo/rehearsal_random/seed0 results/demo/seq_kd/seed0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slukd.demo import run_command  # noqa: E402


def task_times(run_dir: Path, step: int = 2) -> dict:
    """Mean epoch time, pseudo-labelling time and epochs of ``step`` from a run's results file."""
    path = run_dir / "results" / f"step{step}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (has the run finished task {step}?)")
    d = json.loads(path.read_text(encoding="utf-8"))
    epochs = d.get("epoch_s") or []
    if not epochs:
        raise SystemExit(f"{path}: field 'epoch_s' is empty")
    return {"epoch_s": statistics.mean(epochs), "n_epochs": len(epochs), "pseudo_s": float(d.get("pseudo_s", 0.0))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs=2, metavar=("REHEARSAL_RUN", "KD_RUN"), help="read these run folders instead")
    p.add_argument("--base_row", "--base-row", default="rehearsal_random")
    p.add_argument("--kd_row", "--kd-row", default="seq_kd")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="results/bench_kd_ratio")
    p.add_argument("--data", default="data/slu_demo")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra hparams overrides")
    args = p.parse_args(argv)
    if args.runs:
        base_dir, kd_dir = map(Path, args.runs)
    else:
        extra = dict(kv.split("=", 1) for kv in args.set)
        extra.update({"number_of_epochs": args.epochs, "noprogressbar": True})
        out = Path(args.out).resolve()
        dirs = []
        for row in (args.base_row, args.kd_row):
            run_dir = out / row
            cmd = run_command(row, 0, run_dir, Path(args.data).resolve(), extra)
            # two tasks are enough: stop after task 2 (--task runs one task per call)
            for task in (1, 2):
                if subprocess.run([*cmd, f"--task={task}"]).returncode != 0:
                    return 1
            dirs.append(run_dir)
        base_dir, kd_dir = dirs
    b, k = task_times(base_dir), task_times(kd_dir)
    ratio = k["epoch_s"] / b["epoch_s"]
    amortised = (k["epoch_s"] + k["pseudo_s"] / k["n_epochs"]) / b["epoch_s"]
    print(f"task 2 epoch time: rehearsal {b['epoch_s']:.2f} s ({base_dir}), KD {k['epoch_s']:.2f} s ({kd_dir})")
    print(f"teacher pseudo-labelling of the memory: {k['pseudo_s']:.2f} s once per task")
    print(f"ratio KD / rehearsal: {ratio:.3f} per epoch; {amortised:.3f} with pseudo-labelling amortised over "
          f"{k['n_epochs']} epochs (target <= 1.3)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
