"""The whole captioning table in one command: the teacher, then every student row for every seed, then the report.

    python -m slukd.captioning.table                          # all rows of hparams/captioning_kd, seed 0, 2 jobs
    python -m slukd.captioning.table --seeds 0 1 2 --jobs 2   # the README's table (students of seeds 1-2 reuse
                                                              # the seed-0 teacher)
    python -m slukd.captioning.table --rows student_supervised student_seqkd_contrastive_audio -- --device=cuda

Every row runs as its own ``recipes/captioning_kd.py`` process (``OMP_NUM_THREADS=--threads`` each), so a finished
row is a no-op on a rerun and an interrupted one resumes. Order: the teacher (seed ``--teacher_seed``); then the
first student row that needs the teacher's targets, alone beside the teacher-free rows, so that the teacher's
pseudo-captions and embeddings are computed once (the audio-only rows cover the most clips, so one of them goes
first); then the rest, ``--jobs`` at a time. Arguments after ``--`` are passed to every row as overrides. The report
(``captioning_results.*`` and, with several seeds, ``captioning_summary.*``) is written to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from slukd.captioning.report import summarise, summary_markdown, to_markdown, write_report
from slukd.captioning.run import load_config

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


def row_files(hparams_dir: Path, rows: list[str] | None) -> list[Path]:
    """The row YAMLs (every ``*.yaml`` but ``*_base.yaml`` and ``tiny_smoke.yaml``, or the named ``rows``)."""
    if rows:
        files = [hparams_dir / f"{r}.yaml" for r in rows]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"no such row file: {', '.join(missing)}")
        return files
    return [
        f
        for f in sorted(hparams_dir.glob("*.yaml"))
        if not f.name.endswith("_base.yaml") and f.name != "tiny_smoke.yaml"
    ]


def plan(
    files: list[Path], seeds: list[int], teacher_seed: int, overrides: list[str]
) -> tuple[list[str] | None, list[list[str]], list[list[str]], list[str]]:
    """(teacher command, teacher-free student commands, KD student commands, run folders) for the rows and seeds.

    The KD commands start with an audio-only row when there is one (its teacher targets cover the most clips).
    """
    recipe = [sys.executable, str(REPO / "recipes" / "captioning_kd.py")]
    teacher_cmd, teacher_folder = None, None
    for f in files:
        cfg = load_config(f, [*overrides, f"--seed={teacher_seed}"])
        if cfg["role"] == "teacher":
            teacher_cmd = [*recipe, str(f), *overrides, f"--seed={teacher_seed}"]
            teacher_folder = cfg["output_folder"]
    if teacher_folder is None:  # students only: the teacher the row files name for the teacher seed
        teacher_folder = load_config(files[0], [*overrides, f"--seed={teacher_seed}"])["teacher_folder"]
    needs_teacher, free, folders = [], [], []
    for seed in seeds:
        for f in files:
            cfg = load_config(f, [*overrides, f"--seed={seed}", f"--teacher_folder={teacher_folder}"])
            if cfg["role"] == "teacher":
                if seed == teacher_seed:
                    folders.append(cfg["output_folder"])
                continue
            folders.append(cfg["output_folder"])
            cmd = [*recipe, str(f), *overrides, f"--seed={seed}", f"--teacher_folder={teacher_folder}"]
            kd = cfg.get("kd", {})
            uses_teacher = any(float(kd.get(k, 0) or 0) > 0 for k in ("seq", "enc", "tok"))
            (needs_teacher if uses_teacher else free).append((bool(cfg.get("audio_only")), cmd))
    audio = [i for i, (ao, _) in enumerate(needs_teacher) if ao]
    if audio:  # an audio-only row first: its targets cover the most clips
        needs_teacher.insert(0, needs_teacher.pop(audio[0]))
    return teacher_cmd, [c for _, c in free], [c for _, c in needs_teacher], folders


def _run(cmd: list[str], threads: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    name = f"{Path(cmd[2]).stem} {' '.join(a for a in cmd[3:] if a.startswith('--seed'))}"
    logger.info("start %s", name)
    proc = subprocess.run(cmd, env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout else []
    if proc.returncode:
        logger.error("%s failed (exit %d); see its log.txt. Last output: %s", name, proc.returncode, tail)
    else:
        logger.info("done %s: %s", name, tail[0] if tail else "")
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m slukd.captioning.table", description=__doc__.split("\n\n")[0])
    p.add_argument("--hparams_dir", default=str(REPO / "hparams" / "captioning_kd"))
    p.add_argument("--rows", nargs="*", default=None, help="row names (default: every row file)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--teacher_seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="rows run at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per row (1 on a 2-core CPU)")
    p.add_argument("--out", default=None, help="report folder (default: the folder above the seed folders)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        files = row_files(Path(args.hparams_dir), args.rows)
        teacher_cmd, free, kd_rows, folders = plan(files, args.seeds, args.teacher_seed, overrides)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"python -m slukd.captioning.table: error: {err}", file=sys.stderr)
        return 2
    if teacher_cmd is not None and _run(teacher_cmd, args.threads):
        logger.error("the teacher failed: no student row can run")
        return 1
    run = partial(_run, threads=args.threads)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        # the first KD row computes the teacher's targets alone (no two processes write the cache); teacher-free
        # rows fill the other slots meanwhile
        futures = [pool.submit(run, kd_rows[0])] if kd_rows else []
        futures += [pool.submit(run, c) for c in free]
        if kd_rows:
            futures[0].result()
        futures += [pool.submit(run, c) for c in kd_rows[1:]]
        failed = sum(1 for f in futures if f.result() != 0)
    runs = [f for f in folders if (Path(f) / "results.json").is_file()]
    if not runs:
        logger.error("no row finished")
        return 1
    out = Path(args.out) if args.out else Path(runs[0]).parent.parent
    df = write_report(runs, out)
    print(to_markdown(df))
    if df.groupby("row").size().max() > 1:
        print(summary_markdown(summarise(df)))
    logger.info("report: %s/captioning_results.md%s", out, " (+ captioning_summary.md)" if len(args.seeds) > 1 else "")
    if failed:
        logger.error("%d row(s) failed; rerun the same command to resume them", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
