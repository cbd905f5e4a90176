"""Where a recipe run's time goes: one SLU row under cProfile, time per phase as a share of the wall time.

    PYTHONPATH=. python benchmarks/profile_run.py --data_folder data/slu_demo [--row finetune] [--epochs 2]
        [--batching random|bucketed] [-- recipe overrides]

The run trains task 1 only (``--task 1``, ``--number_of_epochs`` epochs) in a temporary folder, then prints the
cumulative seconds of the phases the recipe spends time in (training steps split into forward, backward and the
optimiser; audio loading; validation; test decoding; teacher targets; herding features) and their share of the
whole run. The shares, not the seconds, are what to compare (a shared machine drifts).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: phase -> (file suffix, function name) of the profiled functions (cumulative time)
PHASES = {
    "training steps (fit_batch)": ("sb_core", "fit_batch"),
    "  forward + losses": ("slu/brain.py", "compute_forward"),
    "  backward": ("torch/_tensor.py", "backward"),
    "  optimiser step + clipping": ("train/brain.py", "optimizers_step"),
    "audio loading": ("data/audio.py", "load"),
    "validation (greedy decoding)": ("sb_core", "_fit_valid"),
    "test decoding (beam search)": ("train/decode.py", "decode_dataset"),
    "teacher targets": ("distill/targets.py", "ensure"),
    "herding features": ("train/decode.py", "pooled_features"),
}


def _cumulative(stats: pstats.Stats) -> dict[str, float]:
    out = {k: 0.0 for k in PHASES}
    for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for phase, (suffix, name) in PHASES.items():
            where = "speechbrain/core.py" if suffix == "sb_core" else suffix
            if func == name and filename.endswith(where):
                out[phase] = max(out[phase], ct)  # the outermost frame of a recursive name
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from slukd.utils.run import split_passthrough

    argv, extra = split_passthrough(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_folder", default="data/slu_demo")
    p.add_argument("--row", default="finetune")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batching", default="bucketed", choices=["random", "bucketed"])
    args = p.parse_args(argv)
    import importlib.util

    spec = importlib.util.spec_from_file_location("recipe", REPO / "recipes" / "slurp_incremental.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        run_argv = [str(REPO / "hparams" / "slurp_incremental" / f"{args.row}.yaml"),
                    f"--data_folder={args.data_folder}", f"--output_folder={tmp}/run", "--task=1",
                    f"--number_of_epochs={args.epochs}", f"--batching={args.batching}", "--first_task_cache=null",
                    "--noprogressbar", *extra]  # fmt: skip
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        recipe.main(run_argv)
        prof.disable()
        wall = time.perf_counter() - t0
    times = _cumulative(pstats.Stats(prof))
    print(f"\n{args.row}, task 1, {args.epochs} epoch(s), batching {args.batching}: wall {wall:.1f} s")
    print(f"{'phase':<34}{'seconds':>9}{'share':>8}")
    for phase, sec in times.items():
        print(f"{phase:<34}{sec:>9.1f}{100 * sec / wall:>7.1f}%")
    rest = wall - times["training steps (fit_batch)"] - times["validation (greedy decoding)"]
    rest -= times["test decoding (beam search)"]
    print(f"{'start-up, preparation, other':<34}{rest:>9.1f}{100 * rest / wall:>7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
