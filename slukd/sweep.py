"""``slukd sweep``: rows x seeds (x scenarios) of a recipe, N at a time, resumable, then the report.

    slukd sweep slu --rows finetune rehearsal_herding seq_kd joint --seeds 0 1 2 --splits slurp3 slurp6 --jobs 2
    slukd sweep captioning --seeds 0 1 2 --jobs 2 -- --device cuda
    slukd sweep slu --executor slurm --per_task --slurm_partition gpu --timeout_min 240 --gpus 1 ...

Every run's settings are loaded and checked (:func:`check_plan`, :mod:`slukd.checks`) before the first run starts: a
bad one stops the sweep with one line. Every run is one recipe process (``python recipes/<recipe>.py ROW.yaml
--output_folder ... [overrides]``). Layout:
SLU ``<out>/<split>/<row>/seed<k>`` (the joint row, one task with everything: ``<out>/joint/seed<k>``); captioning
``<out>/seed<k>/<row>``, the students distilling ``<out>/seed<teacher_seed>/teacher``. A finished run is skipped, an
unfinished one resumes; a rerun of the same command continues where it stopped. Declared dependencies are honoured
(captioning students run after their teacher; with ``--per_task`` the tasks of a continual run are a chain of jobs).
Continual rows share their first task through the recipe's first-task cache, so one producer row per (split, seed)
is scheduled first. Runs go to a local pool (``--executor local``: ``--jobs`` processes with ``--threads`` torch
threads each) or to submitit (``--executor slurm`` on a SLURM cluster, ``submitit-local`` to try it on one machine).
The report (``slukd report``) is written to ``<out>`` (SLU: ``<out>/<split>`` per scenario) at the end.
Disk: a finished run keeps its best model (SLU: each task's ``best_model.ckpt``; captioning: ``model.ckpt``) and
loses its epoch checkpoints (``save/``, only a killed run resumes from them; ``--keep_checkpoints`` keeps them), and
no run starts while the output's disk has less than ``--min_free_gb`` free (the sweep stops with that message; a
rerun continues).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slukd.resources import hparams_dir, list_rows, recipe_path, resolve_row
from slukd.utils.lock import FD_ENV, holder_of, try_lock

logger = logging.getLogger(__name__)

__all__ = ["Run", "plan_slu", "plan_captioning", "check_plan", "run_local", "run_submitit", "cli_main"]

TASKS_OF_SPLIT = {"slurp3": 3, "slurp6": 6, "joint": 1}


@dataclass
class Run:
    """One recipe run of a sweep."""

    name: str
    recipe: str
    row_file: Path
    out: Path
    args: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    n_tasks: int = 1

    def command(self, task: int | None = None) -> list[str]:
        cmd = [sys.executable, str(recipe_path(self.recipe)), str(self.row_file), *self.args,
               f"--output_folder={self.out}"]  # fmt: skip
        return cmd + ([f"--task={task}"] if task is not None else [])

    def finished(self, check_data: bool = True) -> bool:
        """Whether the run folder holds a finished run (captioning: results.json; SLU: every task DONE) made on
        the data as it is now: a finished run whose data changed since it started is not finished (the recipe
        then applies its ``data_changed`` policy: stop naming the change, restart or keep)."""
        if self.recipe == "captioning":
            done = (self.out / "results.json").is_file()
        else:
            scen = self.out / "scenario.json"
            if not scen.is_file():
                return False
            import json

            n = len(json.loads(scen.read_text(encoding="utf-8"))["tasks"])
            done = all((self.out / f"task{k}" / "DONE").is_file() for k in range(1, n + 1))
        if not done or not check_data:
            return done
        from slukd.data.fingerprint import run_data_changes

        changes = run_data_changes(self.recipe, self.out)
        if changes:
            logger.warning("sweep: %s finished earlier, but its data changed since (%s): run again", self.name,
                           "; ".join(changes))  # fmt: skip
        return not changes

    def prune_resume_checkpoints(self) -> int:
        """Remove the epoch checkpoints (``save/``) that only a killed run resumes from, once what they served is
        finished; returns the bytes freed. SLU: ``task<k>/save`` of every task with its DONE marker (the next task,
        ``--task N``, the report and inference read ``task<k>/best_model.ckpt``, which stays); captioning:
        ``save/`` once ``results.json`` marks the run finished (its students and inference read ``model.ckpt``)."""
        if self.recipe == "captioning":
            folders = [self.out / "save"] if (self.out / "results.json").is_file() else []
        else:
            folders = [done.parent / "save" for done in sorted(self.out.glob("task*/DONE"))]
        freed = 0
        for save in folders:
            if save.is_dir():
                freed += sum(f.stat().st_size for f in save.rglob("*") if f.is_file())
                shutil.rmtree(save)
        return freed


#: SpeechBrain run options that are flags (``--noprogressbar``, not ``--noprogressbar=true``)
FLAG_OPTIONS = {"noprogressbar", "debug", "test_only", "debug_persistently", "data_parallel_backend", "jit", "compile",
                "find_unused_parameters", "skip_nonfinite_grads", "tqdm_colored_bar"}  # fmt: skip


def _overrides(pairs: list[str], extra: list[str]) -> list[str]:
    """``--set KEY=VALUE`` pairs as recipe arguments (a SpeechBrain flag set to true becomes ``--flag``)."""
    out = []
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"--set expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        if k in FLAG_OPTIONS:
            if v.lower() in ("true", "1", "yes"):
                out.append(f"--{k}")
            continue
        out.append(f"--{k}={v}")
    return out + list(extra)


def plan_slu(rows: list[str], seeds: list[int], splits: list[str], out: Path, args: list[str],
             hp_dir: str | None = None) -> list[Run]:  # fmt: skip
    """Runs of a continual sweep: the joint row once per seed, every other row per (split, seed). Order: for each
    (split, seed) one row first (it trains the shared first task), then the joint runs, then the rest."""
    producers, joints, others = [], [], []
    for seed in seeds:
        if "joint" in rows:
            f = resolve_row("slu", "joint", hp_dir)
            joints.append(Run(f"joint/seed{seed}", "slu", f, out / "joint" / f"seed{seed}", [*args, f"--seed={seed}"]))
        for split in splits:
            first = True
            for row in rows:
                if row == "joint":
                    continue
                f = resolve_row("slu", row, hp_dir)
                run_args = [*args, f"--seed={seed}", f"--split={split}"]
                run = Run(f"{split}/{row}/seed{seed}", "slu", f, out / split / row / f"seed{seed}", run_args,
                          n_tasks=TASKS_OF_SPLIT.get(split, 1))  # fmt: skip
                (producers if first else others).append(run)
                first = False
    return producers + joints + others


def plan_captioning(rows: list[str], seeds: list[int], out: Path, args: list[str], teacher_seed: int = 0,
                    hp_dir: str | None = None) -> list[Run]:  # fmt: skip
    """Runs of a captioning sweep: the teacher (seed ``teacher_seed``) first, then every student row per seed,
    after the teacher."""
    from slukd.config import load_hparams

    teacher_out = out / f"seed{teacher_seed}" / "teacher"
    runs, teacher_name = [], None
    for row in rows:
        f = resolve_row("captioning", row, hp_dir)
        role = load_hparams(f, validate=False)[0]["role"]
        if role == "teacher":
            teacher_name = f"seed{teacher_seed}/{row}"
            runs.insert(0, Run(teacher_name, "captioning", f, teacher_out, [*args, f"--seed={teacher_seed}"]))
    for seed in seeds:
        for row in rows:
            f = resolve_row("captioning", row, hp_dir)
            if teacher_name is not None and f"seed{teacher_seed}/{row}" == teacher_name:
                continue
            run_args = [*args, f"--seed={seed}", f"--teacher_folder={teacher_out}", f"--teacher_seed={teacher_seed}"]
            runs.append(Run(f"seed{seed}/{row}", "captioning", f, out / f"seed{seed}" / row, run_args,
                            after=[teacher_name] if teacher_name else []))  # fmt: skip
    return runs


def check_plan(plan: list[Run]) -> None:
    """Every run's settings, loaded and checked as its recipe will (unknown keys, values, cross-key rules, extras,
    corpus folders: :mod:`slukd.checks`), before any run starts. Raises :class:`~slukd.checks.SettingsError` with
    one line: the first refused run, its reason and how many runs were refused."""
    from slukd.checks import CHECKS, SettingsError
    from slukd.experiment import resolve_settings, user_errors

    refused: list[tuple[str, str]] = []
    for r in plan:
        try:
            hp = resolve_settings(r.command()[2:])[3]
            CHECKS[r.recipe](hp)
        except user_errors() as err:
            refused.append((r.name, str(err).splitlines()[0] if str(err) else type(err).__name__))
    if refused:
        name, why = refused[0]
        raise SettingsError(f"{name}: {why} ({len(refused)} of {len(plan)} runs refused; nothing was started)")


# ---------------------------------------------------------------------------------------------------- executors
JEMALLOC = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/libjemalloc.so.2")  # fmt: skip


def _env(threads: int) -> dict[str, str]:
    """A run's environment: ``threads`` torch threads, and jemalloc as the allocator when the system has it
    (measured 6% faster training steps on the demo, same numbers; ``SLUKD_JEMALLOC=0`` turns it off)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    lib = next((p for p in JEMALLOC if os.path.isfile(p)), None)
    if lib and os.environ.get("SLUKD_JEMALLOC", "1") != "0" and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(x for x in (env.get("LD_PRELOAD"), lib) if x)
    return env


def free_gb(folder: Path) -> float:
    """Free space (GB) of the file system that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free / 1e9


class DiskFull(RuntimeError):
    """Too little free space to start another run."""


def _start(r: Run, lock: Any, threads: int, log_dir: Path | None) -> tuple[subprocess.Popen, float, Any]:
    """Start the recipe process of ``r`` (it inherits the folder's lock); returns (process, start time, log file)."""
    log = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / (r.name.replace("/", "__") + ".log"), "a")  # noqa: SIM115 - closed by run_local
    logger.info("sweep: start %s (%d thread(s))", r.name, threads)
    try:  # the recipe inherits the locked file: the folder is never free between the check and its start
        proc = subprocess.Popen(r.command(), env={**_env(threads), FD_ENV: str(lock.fd)},
                                stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                pass_fds=(lock.fd,))  # fmt: skip
    finally:
        os.close(lock.fd)  # the child's copy keeps the lock
        lock.fd = None
    return proc, time.perf_counter(), log


def _prune(r: Run) -> None:
    if (freed := r.prune_resume_checkpoints()) > 0:
        logger.info("sweep: %s: epoch checkpoints removed (%.0f MB; the best model stays)", r.name, freed / 1e6)


def run_local(
    plan: list[Run], jobs: int = 2, threads: int | None = None, log_dir: Path | None = None,
    keep_checkpoints: bool = False, min_free_gb: float = 0.0,
) -> dict[str, int]:  # fmt: skip
    """Run the plan with ``jobs`` processes at a time; returns {run name: exit code} (0 also for skipped runs;
    a run whose dependency failed gets -1 and is not started). A run that finishes has its resume-only checkpoints
    removed (:meth:`Run.prune_resume_checkpoints`) unless ``keep_checkpoints``. No run starts while the output's
    file system has less than ``min_free_gb`` free: the runs in flight finish, then :class:`DiskFull` names the
    folder (a rerun of the same command continues)."""
    stop: str | None = None
    jobs = max(1, jobs)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    status: dict[str, int] = {}
    pending = [r for r in plan]
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    busy: set[str] = set()  # runs another process was training when last looked at (logged once)
    for r in pending[:]:  # finished runs (on unchanged data) first, so that the runs after them can start
        lock = try_lock(r.out)
        if lock is not None:
            done = r.finished()
            lock.release()
            if done:
                logger.info("sweep: %s finished earlier: skipped", r.name)
                status[r.name] = 0
                pending.remove(r)
    while (pending and stop is None) or running:
        for r in pending[:]:
            if len(running) >= jobs or stop is not None:
                break
            if any(status.get(a, 0) != 0 for a in r.after if a in status):
                status[r.name] = -1
                pending.remove(r)
                logger.error("sweep: %s not started: a run it needs failed (%s)", r.name, ", ".join(r.after))
                continue
            if any(a not in status for a in r.after):
                continue
            # one writer per run folder: a run another process holds is looked at again once it is free
            lock = try_lock(r.out)
            if lock is None:
                if r.name not in busy:
                    logger.info("sweep: %s is in use (%s): checked again when it is free", r.name, holder_of(r.out))
                    busy.add(r.name)
                continue
            if r.finished():
                lock.release()
                logger.info("sweep: %s finished earlier: skipped", r.name)
                status[r.name] = 0
                pending.remove(r)
                continue
            if min_free_gb > 0 and (free := free_gb(r.out)) < min_free_gb:
                lock.release()
                stop = f"{r.out}: {free:.1f} GB free, below --min_free_gb {min_free_gb:g}"
                logger.error("sweep: %s: not starting %s or any later run", stop, r.name)
                break
            running[r.name] = _start(r, lock, threads, log_dir)
            pending.remove(r)
        time.sleep(0.5)
        for name, (proc, t0, log) in list(running.items()):
            if proc.poll() is None:
                continue
            status[name] = proc.returncode
            if log is not None:
                log.close()
            del running[name]
            if proc.returncode == 0 and not keep_checkpoints:
                _prune(next(r for r in plan if r.name == name))
            level = logging.INFO if proc.returncode == 0 else logging.ERROR
            logger.log(level, "sweep: %s %s after %.0f s (%d of %d runs settled)", name,
                       "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})",
                       time.perf_counter() - t0, len(status), len(plan))  # fmt: skip
    if stop is not None:
        raise DiskFull(f"{stop}: {len(pending)} run(s) not started; free space and rerun the same command")
    return status


def _job(cmd: list[str], threads: int) -> int:
    """A submitit job: run one recipe command (or one task of it)."""
    return subprocess.run(cmd, env=_env(threads), check=True).returncode


def run_submitit(plan: list[Run], folder: Path, cluster: str = "slurm", per_task: bool = False, threads: int = 1,
                 params: dict[str, Any] | None = None, wait: bool = True) -> dict[str, int]:  # fmt: skip
    """Submit the plan through submitit: one job per run, or with ``per_task`` one job per task of a continual
    run, chained. On SLURM, dependencies are job dependencies (afterok), so everything is submitted at once; with
    ``cluster="local"`` (submitit's local executor, for trying a sweep) a job is submitted when its dependencies
    are done."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**(params or {}))
    jobs: dict[str, Any] = {}
    status: dict[str, int] = {}

    def submit(name: str, cmd: list[str], deps: list[Any]):
        if cluster == "slurm" and deps:
            dep = ":".join(str(j.job_id) for j in deps)
            executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{dep}"})
        for d in deps if cluster != "slurm" else []:
            d.result()  # local: run after the dependency
        job = executor.submit(_job, cmd, threads)
        if cluster == "slurm":
            executor.update_parameters(slurm_additional_parameters={})
        logger.info("sweep: submitted %s as job %s", name, job.job_id)
        return job

    for r in plan:
        if r.finished():
            status[r.name] = 0
            continue
        deps = [jobs[a] for a in r.after if a in jobs]
        if per_task and r.recipe == "slu" and r.n_tasks > 1:
            last = None
            for k in range(1, r.n_tasks + 1):
                last = submit(f"{r.name} task {k}", r.command(task=k), deps + ([last] if last else []))
            jobs[r.name] = last
        else:
            jobs[r.name] = submit(r.name, r.command(), deps)
    if not wait:
        return {**status, **{n: 0 for n in jobs}}
    for name, job in jobs.items():
        try:
            job.result()
            status[name] = 0
        except Exception as err:  # a failed job: its stderr is in submitit's folder
            logger.error("sweep: %s failed: %s", name, str(err).splitlines()[-1] if str(err) else err)
            status[name] = 1
    return status


# ---------------------------------------------------------------------------------------------------- reports
def write_reports(recipe: str, out: Path, splits: list[str]) -> str:
    """Report of the sweep folder (SLU: one per scenario, with the joint runs); returns the Markdown."""
    from slukd.report import ReportError, report_runs

    texts = []
    groups = [(out / s, [out / s] + ([out / "joint"] if (out / "joint").is_dir() else [])) for s in splits]
    if recipe == "captioning" or not splits:
        groups = [(out, [out])]
    for dest, paths in groups:
        paths = [p for p in paths if p.is_dir()]
        if not paths:
            continue
        try:
            paper = dest.name if recipe == "slu" and dest.name in ("slurp3", "slurp6") else None
            text = report_runs(paths, out_dir=dest, paper=paper)
        except ReportError as err:
            logger.warning("report of %s: %s", dest, err)
            continue
        texts.append((f"# {dest.name}\n\n" if recipe == "slu" else "") + text)
    return "\n".join(texts)


def _parser(prog: str) -> argparse.ArgumentParser:
    """The options of ``slukd sweep``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Arguments after -- are passed to every run as recipe overrides. Every run's settings are checked "
        "before the first run starts. example: slukd sweep slu --rows finetune seq_kd --seeds 0 1 --jobs 2 "
        "--out results/my_sweep --set number_of_epochs=5",
    )
    p.add_argument("recipe", choices=["slu", "captioning"], help="which recipe")
    p.add_argument("--rows", nargs="+", default=None, help="row names (default: every row file)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every row")
    p.add_argument("--splits", nargs="+", default=["slurp3"], help="SLU scenarios: slurp3 slurp6")
    p.add_argument("--teacher_seed", type=int, default=0, help="captioning: the seed of the teacher every student uses")
    p.add_argument("--out", default=None, help="sweep folder (default results/sweep_<recipe>)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every run")
    p.add_argument("--hparams_dir", default=None, help="folder of row files (default: the shipped ones)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (local executor)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / jobs)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local", help="where runs go")
    p.add_argument("--per_task", action="store_true", help="submitit: one job per task of a continual run")
    p.add_argument("--slurm_partition", default=None, help="SLURM partition (slurm executor)")
    p.add_argument("--timeout_min", type=int, default=240, help="time limit per job in minutes (submitit)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per job (submitit)")
    p.add_argument("--cpus", type=int, default=4, help="CPUs per job (submitit)")
    p.add_argument("--no_wait", action="store_true", help="slurm: submit and exit (report later with slukd report)")
    p.add_argument(
        "--keep_checkpoints",
        action="store_true",
        help="keep the epoch checkpoints of finished runs (save/; SLU: about 85 MB per task at demo "
        "size; default: removed when the run finishes, the best model stays)",
    )
    p.add_argument(
        "--min_free_gb",
        type=float,
        default=2.0,
        help="start no run while the output's disk has less free space (local executor)",
    )
    p.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    return p


def cli_main(argv: list[str], prog: str = "slukd sweep") -> int:
    """``slukd sweep RECIPE [options] [-- recipe overrides]`` (see the module docstring)."""
    from slukd.utils.run import split_passthrough

    argv, extra = split_passthrough(argv)
    args = _parser(prog).parse_args(argv)
    rows = args.rows or list_rows(args.recipe, args.hparams_dir)
    hparams_dir(args.recipe, args.hparams_dir)  # a clear error for a bad folder
    out = Path(args.out or f"results/sweep_{args.recipe}").resolve()
    overrides = _overrides(args.set, extra)
    if args.recipe == "slu":
        plan = plan_slu(rows, args.seeds, args.splits, out, overrides, args.hparams_dir)
    else:
        plan = plan_captioning(rows, args.seeds, out, overrides, args.teacher_seed, args.hparams_dir)
    check_plan(plan)
    if args.dry_run:
        for r in plan:
            state = "finished" if r.finished() else "to run"
            after = f" (after {', '.join(r.after)})" if r.after else ""
            print(f"{r.name}: {state}{after}\n  {' '.join(r.command())}")
        return 0
    t0 = time.perf_counter()
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    if args.executor == "local":
        try:
            status = run_local(plan, args.jobs, threads, log_dir=out / "logs", keep_checkpoints=args.keep_checkpoints,
                               min_free_gb=args.min_free_gb)  # fmt: skip
        except DiskFull as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 3
    else:
        params: dict[str, Any] = {"timeout_min": args.timeout_min, "cpus_per_task": args.cpus}
        if args.executor == "slurm":
            params.update(slurm_partition=args.slurm_partition, gpus_per_node=args.gpus)
        cluster = "slurm" if args.executor == "slurm" else "local"
        status = run_submitit(plan, out / "submitit", cluster, args.per_task, threads, params, wait=not args.no_wait)
        if args.no_wait:
            print(f"submitted {len(plan)} run(s); report later: slukd report {out}")
            return 0
        if not args.keep_checkpoints:
            for r in plan:
                if status.get(r.name) == 0:
                    _prune(r)
    failed = [n for n, rc in status.items() if rc != 0]
    print(write_reports(args.recipe, out, args.splits if args.recipe == "slu" else []))
    print(f"{len(plan)} run(s), {len(failed)} failed, {time.perf_counter() - t0:.0f} s; results in {out}")
    for n in failed:
        print(f"{prog}: {n} failed; its log: {out / 'logs' / (n.replace('/', '__') + '.log')}", file=sys.stderr)
    return 1 if failed else 0
