"""What every recipe does before its experiment: command line, hparams, run options, DDP, logging, run record.

    hparams, run_opts = start_experiment(sys.argv[1:], exclude=NOT_IDENTITY, recipe="recipes/slurp_incremental.py")

- The command line is SpeechBrain's: ``ROW.yaml [--run_option ...] [--key value ...]``; hparams come from
  :func:`slukd.config.load_hparams` (``base:`` chain, must-match overrides, values checked before any work).
- A SpeechBrain run option that is also an hparam (``--precision``, ``--eval_precision``, ``--noprogressbar``,
  ``--max_grad_norm``, ``--device`` ...) is written into the hparams, so every phase of the recipe (training,
  decoding, teacher targets) and the run record see the same value.
- A run that SpeechBrain shortens (``--debug``, ``--optimizer_step_limit``) writes into ``<output_folder>-debug``,
  never into the real folder, and its record says ``shortened: true``: its markers and results can never be taken
  for a real run's.
- Under ``torchrun`` the process group is initialised (gloo when there is no CUDA).
- The recipe's ``check`` (cross-key rules, optional extras, the data folder: :mod:`slukd.checks`) runs before
  anything is written, so a run stopped by its settings never claims its output folder.
- A run stopped by a user error before any work (no task, checkpoint or result yet) in a folder it created
  removes that folder again (:func:`main_guard`).
- The run folder gets ``run_info.json`` and ``hparams_resolved.yaml`` (:func:`slukd.utils.run.record_run`); a folder
  holding a run with other settings is refused, naming the differing settings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch

from slukd.config import load_hparams, parse_overrides, row_chain
from slukd.utils.lock import hold_run_lock, release_all
from slukd.utils.logging import log_to_files, setup_logging
from slukd.utils.run import record_run, settings_identity

logger = logging.getLogger(__name__)

__all__ = ["start_experiment", "resolve_settings", "world_size", "is_shortened", "SHORTENING_OPTIONS"]

#: SpeechBrain run options that make a run do less than its settings say.
SHORTENING_OPTIONS = ("debug", "optimizer_step_limit")

#: run options that, when also hparams, are copied into the hparams.
_SHARED_OPTIONS = ("precision", "eval_precision", "noprogressbar", "max_grad_norm", "device", "ckpt_interval_minutes")


def world_size() -> int:
    """Processes of this job (``WORLD_SIZE`` set by torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_shortened(run_opts: Any) -> bool:
    """Whether SpeechBrain's run options shorten the run (debug mode, an optimiser step limit)."""
    return bool(getattr(run_opts, "debug", False)) or getattr(run_opts, "optimizer_step_limit", None) is not None


def _init_ddp(run_opts: Any) -> Any:
    if "RANK" in os.environ and "LOCAL_RANK" in os.environ:
        if "distributed_backend" not in run_opts.overridden_args and not torch.cuda.is_available():
            run_opts = dataclasses.replace(  # nccl needs CUDA; the Brain reads only overridden run options
                run_opts,
                distributed_backend="gloo",
                overridden_args={*run_opts.overridden_args, "distributed_backend"},
            )
        sb.utils.distributed.ddp_init_group(run_opts)
    return run_opts


def resolve_settings(argv: list[str]) -> tuple[str, Any, Any, dict[str, Any], str]:
    """A recipe command line's settings, loaded and checked key by key, nothing written: (row file, run_opts,
    override tree, hparams, resolved YAML text)."""
    param_file, run_opts, overrides = sb.parse_arguments(list(argv))
    base_keys = {str(k) for _, tree in row_chain(param_file) for k in tree}
    tree = parse_overrides(overrides)
    for o in _SHARED_OPTIONS:
        if o in run_opts.overridden_args and o in base_keys:
            tree[o] = getattr(run_opts, o)
    hp, resolved = load_hparams(param_file, tree)
    return param_file, run_opts, tree, hp, resolved


def start_experiment(
    argv: list[str],
    exclude: set[str] | frozenset[str],
    recipe: str,
    identity_keys: tuple[str, ...] = ("row", "seed"),
    check: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Parse, load, set up and record a run (see the module docstring); returns (hparams, run_opts). ``check``
    (e.g. :func:`slukd.checks.check_slu`) sees the hparams before anything is written: a run it stops never
    claims its output folder."""
    param_file, run_opts, tree, hp, resolved = resolve_settings(argv)
    if check is not None:
        check(hp)
    shortened = is_shortened(run_opts)
    if shortened:
        tree["output_folder"] = str(hp["output_folder"]).rstrip("/") + "-debug"
        hp, resolved = load_hparams(param_file, tree)
    run_opts = _init_ddp(run_opts)
    rank = int(os.environ.get("RANK", "0") or 0)
    out = Path(hp["output_folder"])
    global _NEW_FOLDER
    _NEW_FOLDER = out if rank == 0 and world_size() == 1 and not (out.exists() and any(out.iterdir())) else None
    if rank == 0:  # one writer per run folder (slukd.utils.lock): another process working here stops this one
        hold_run_lock(out)
    setup_logging(log_file=out / ("log.txt" if rank == 0 else f"log.rank{rank}.txt"))
    if shortened:
        logger.warning("shortened run (SpeechBrain --debug / --optimizer_step_limit): writing to %s", out)
    identity = {k: hp.get(k) for k in identity_keys}
    identity.update(settings=settings_identity(resolved, exclude), world_size=world_size(), shortened=shortened)
    if rank == 0:
        record_run(out, resolved, identity, [recipe, *argv])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return hp, run_opts


#: the run folder this process created (None: it existed, or a DDP run); see :func:`_release_unworked_folder`
_NEW_FOLDER: Path | None = None
#: entries of a run folder that mean work was done (training, results): a folder holding any is never released
WORK_OUTPUTS = ("task", "save", "results", "model.ckpt", "teacher_targets", "test_only")


def _release_unworked_folder() -> None:
    """After a user error: remove the run folder this process created when no work was done in it (only set-up:
    run record, log, manifests, tokenizer), so a run that stopped early does not claim it for its settings."""
    import shutil

    out = _NEW_FOLDER
    if out is None or not out.is_dir():
        return
    if any(p.name.startswith(WORK_OUTPUTS) for p in out.iterdir()):
        return
    for h in list(logging.getLogger().handlers):  # its log file goes with it
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).is_relative_to(out.resolve()):
            logging.getLogger().removeHandler(h)
            h.close()
    shutil.rmtree(out, ignore_errors=True)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or settings (one clear line for the user, no traceback)."""
    from slukd.config import HparamsError
    from slukd.continual.runner import TaskOrderError
    from slukd.continual.scenario import ScenarioError
    from slukd.data.audio import AudioError, BadAudioError
    from slukd.data.captions import CaptionFormatError
    from slukd.data.fingerprint import DataChangedError
    from slukd.data.slurp import SlurpFormatError
    from slukd.data.synth_slu import CorpusError
    from slukd.data.tts import TTSError
    from slukd.inference import InferenceError
    from slukd.resources import ResourceError
    from slukd.slu.data import ManifestError
    from slukd.utils.io import WriteError
    from slukd.utils.lock import RunLockedError
    from slukd.utils.run import IncompatibleRunError

    return (HparamsError, IncompatibleRunError, TaskOrderError, ScenarioError, AudioError, BadAudioError,
            SlurpFormatError, ManifestError, ResourceError, WriteError, InferenceError, DataChangedError,
            CorpusError, TTSError, FileNotFoundError, PermissionError, RunLockedError, CaptionFormatError)  # fmt: skip


def print_recipe_help(doc: str, argv: list[str]) -> None:
    """A recipe's ``--help``: its docstring, then every hparam of the row file (when given) with its comment."""
    from slukd.config import describe_hparams

    print(doc.strip())
    rows = [a for a in argv if not a.startswith("-")]
    if rows and Path(rows[0]).is_file():
        print(f"\nhparams of {rows[0]} (override with --key value; nested keys with dots):\n")
        for key, value, comment in describe_hparams(rows[0]):
            shown = value if not isinstance(value, (dict, list)) else "{...}" if isinstance(value, dict) else "[...]"
            head = f"  --{key:<24} {str(shown):<28} "
            if len(head) > 58:  # a long value: the comment on the next line
                print(head.rstrip())
                head = " " * 58
            lines = textwrap.wrap(comment, width=120 - 58) or [""]
            print(head + lines[0])
            for more in lines[1:]:
                print(" " * 58 + more)
    print(
        "\nSpeechBrain run options (--device, --precision, --debug, --noprogressbar, ...): python -c "
        '\'import speechbrain as sb; sb.parse_arguments(["x", "--help"])\''
    )


def main_guard(main_fn, argv: list[str] | None = None, doc: str = "") -> int:
    """Run a recipe's ``main_fn(argv)``. ``--help`` prints the recipe's help (with the row's hparams); a user
    error (bad settings, data or folder) is one line on stderr and exit status 2, a traceback only with
    ``--verbose`` (or ``SLUKD_VERBOSE=1``); every fatal error also goes to the run's log."""
    from slukd.cli import normalize_option

    global _NEW_FOLDER
    _NEW_FOLDER = None  # set by start_experiment for this run
    argv = [normalize_option(a) for a in (sys.argv[1:] if argv is None else argv)]  # --key-name = --key_name
    if "--help" in argv or "-h" in argv or not argv:
        print_recipe_help(doc, argv)
        return 0 if argv else 2
    verbose = "--verbose" in argv or os.environ.get("SLUKD_VERBOSE", "") not in ("", "0")
    argv = [a for a in argv if a != "--verbose"]
    try:
        return int(main_fn(argv) or 0)
    except user_errors() as exc:
        log_to_files(logger.name, logging.ERROR, f"run stopped: {type(exc).__name__}: {exc}")  # stderr: once, below
        _release_unworked_folder()
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            logger.error("run stopped: %s: %s", type(exc).__name__, exc, exc_info=exc)
        raise
    finally:
        release_all()
