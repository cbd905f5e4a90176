"""Do two checkouts give bit-identical SLU results? Tiny runs of each row with each checkout's own code, compared.

A refactor of result-affecting code (``slukd/``, the recipes) should leave every row's results unchanged. For each
row, the SLU recipe of checkout A and of checkout B runs the same tiny two-task configuration (the tests' tone
corpus, 2 epochs per task, one thread) and the two runs are compared: every step result (minus times, memory
figures, the code version, and the keys named by ``--ignore``, e.g. a record only the newer code writes), every
task's predictions, the report's columns, the continual matrices, the memory files, the plugins' saved state and
the best checkpoints byte for byte. Prints one line per row and exits 1 if any row differs.

    python benchmarks/bit_identity.py --a /path/to/old_checkout --b . [--rows finetune seq_kd ...] [--ignore memory]

Runs already in ``--work`` are reused (a rerun resumes); about 30 s per row and checkout on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers_slu import comparable_results, make_corpus, tiny_argv, write_order  # noqa: E402

ROWS = ["finetune", "rehearsal_herding", "rehearsal_5pct", "audio_kd", "tok_kd", "seq_kd", "all_kd", "joint",
        "ewc", "mas", "lwf", "agem", "derpp", "contrastive_kd"]  # fmt: skip
ALWAYS_IGNORED = ("code",)  # the code version differs by construction


def run_row(checkout: Path, row: str, corpus: Path, order: Path, out: Path) -> None:
    """The tiny run of ``row`` with ``checkout``'s recipe and package (skipped when ``out`` already has a report)."""
    if (out / "report.csv").is_file():
        return
    argv = tiny_argv(corpus, out, order, row, "--number_of_epochs=2", "--eval_batch_size=2")
    argv[0] = str(checkout / "hparams" / "slurp_incremental" / f"{row}.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", PYTHONPATH=str(checkout))
    recipe = checkout / "recipes" / "slurp_incremental.py"
    done = subprocess.run([sys.executable, str(recipe), *argv], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{row} with {checkout} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")


def comparable(run: Path, ignore: set[str]) -> dict[str, object]:
    """``comparable_results`` minus the ignored step-result keys, plus the digests of each task's best checkpoint and
    of the continual plugins' saved state (``continual/``)."""
    out = comparable_results(run)
    for key, value in out.items():
        if key.startswith("results/") and isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k not in ignore}
    for path in sorted([*run.glob("task*/best_model.ckpt"), *run.glob("continual/*")]):
        out[str(path.relative_to(run))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--a", type=Path, required=True, help="first checkout (its slukd/, recipes/ and hparams/)")
    p.add_argument("--b", type=Path, default=REPO, help="second checkout (default: this one)")
    p.add_argument("--rows", nargs="+", default=ROWS, help="row files of hparams/slurp_incremental/")
    p.add_argument("--ignore", nargs="*", default=[], help="step-result keys left out of the comparison")
    p.add_argument("--work", type=Path, default=Path("results/bit_identity"), help="where the runs are written")
    args = p.parse_args(argv)
    ignore = set(ALWAYS_IGNORED) | set(args.ignore)
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / "corpus"
    if not (corpus / "dataset" / "slurp" / "test.jsonl").is_file():
        make_corpus(corpus, {"train": 3, "devel": 1, "test": 2})
    order = write_order(args.work)
    differ = []
    for row in args.rows:
        runs = {}
        for tag, checkout in (("a", args.a.resolve()), ("b", args.b.resolve())):
            runs[tag] = args.work / tag / row
            run_row(checkout, row, corpus, order, runs[tag])
        ra, rb = comparable(runs["a"], ignore), comparable(runs["b"], ignore)
        keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
        n_ckpt = sum(k.endswith("best_model.ckpt") for k in ra)
        print(f"{row:<20} {'identical' if not keys else 'DIFFERS: ' + ', '.join(keys)} "
              f"({len(ra)} items compared, {n_ckpt} checkpoints)", flush=True)  # fmt: skip
        if keys:
            differ.append(row)
    print(
        f"{len(args.rows) - len(differ)} of {len(args.rows)} rows identical" + (f"; differ: {differ}" if differ else "")
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
