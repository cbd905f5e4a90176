"""The ``slukd`` command line: one surface for both recipes.

    slukd train slu|captioning ROW [--key value ...]   run one row (a row name or a YAML file; recipe overrides)
    slukd sweep slu|captioning [--rows ...] [--seeds ...] rows x seeds (x scenarios), N at a time or on SLURM
    slukd demo                                          the main job: class-incremental SLURP-3 on built-in data
    slukd report PATH... [--out DIR]                    results tables of finished runs (both recipes)
    slukd understand RUN_DIR AUDIO...                   SLU predictions for audio files (intent, slots, text)
    slukd caption RUN_DIR AUDIO...                      captions for audio files
    slukd export RUN_DIR --out DIR                      a SpeechBrain-loadable folder with a model card
    slukd synth slu|scenes --out DIR                    the built-in corpora
    slukd score slurp --gold G --pred P                 SLURP's official scoring
    slukd bench [NAME]                                  the speed/memory benchmarks

Each subcommand lives in the module that implements it (``cli_main(argv, prog) -> int``). A user error (bad
settings, missing files) prints one line and exits with status 2; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from slukd.version import __version__

#: command -> (module, one-line help); a dict for commands with a second level.
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "train": ("slukd.cli_train", "run one row of a recipe (python recipes/<recipe>.py ROW.yaml works too)"),
    "sweep": ("slukd.sweep", "rows x seeds (x scenarios) of a recipe, resumable, locally or on SLURM"),
    "demo": ("slukd.demo", "the main job: class-incremental SLURP-3 on the built-in demo corpus"),
    "report": ("slukd.report", "results tables of finished runs of both recipes (mean ± std over seeds)"),
    "understand": ("slukd.inference.cli", "SLU predictions (SLURP format) for audio files with a finished run"),
    "caption": ("slukd.inference.cli", "captions for audio files with a finished captioning run"),
    "export": ("slukd.inference.cli", "a finished run as a SpeechBrain-loadable folder with a model card"),
    "synth": {
        "slu": ("slukd.data.synth_slu", "generate the built-in SLU speech corpus (SLURP schema, espeak-ng)"),
        "scenes": ("slukd.data.synth_scenes", "generate the built-in audio-captioning corpus"),
    },
    "score": {"slurp": ("slukd.metrics.slurp_scorer", "score SLURP-format predictions against gold jsonl")},
    "bench": ("slukd.bench", "list or run the speed/memory benchmarks"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slukd",
        description="Knowledge distillation for class-incremental SLU (SLURP) and efficient audio captioning.",
        epilog="Run 'slukd COMMAND --help' for a command's options, defaults and an example. Start with: slukd demo "
        "--tiny (the one-minute example) or slukd demo (the main job). Options take hyphens or underscores.",
    )
    parser.add_argument("--version", action="version", version=f"slukd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in COMMANDS.items():
        if isinstance(spec, dict):
            p = sub.add_parser(name, help=f"{name} " + " | ".join(spec), description=f"slukd {name} WHAT ...")
            inner = p.add_subparsers(dest="what", metavar="WHAT")
            for what, (_, text) in spec.items():
                inner.add_parser(what, help=text, add_help=False)
        else:
            sub.add_parser(name, help=spec[1], add_help=False)
    return parser


def _dispatch(module: str, argv: list[str], prog: str) -> int:
    from slukd.utils.logging import setup_logging

    setup_logging()
    mod = importlib.import_module(module)
    fn = mod.cli_main
    if prog.split()[-1] in ("understand", "caption", "export"):
        return int(fn(argv, prog=prog, mode=prog.split()[-1]) or 0)
    return int(fn(argv, prog=prog) or 0)


def normalize_option(arg: str) -> str:
    """``--key-name[=v]`` -> ``--key_name[=v]``: every option and hparam is accepted in both spellings (the
    underscore one is canonical); values and positional arguments are left alone."""
    if not arg.startswith("--") or arg == "--":
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slukd`` console script (imports torch only for commands that need it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] != "bench":  # benchmark scripts keep their own option spellings
        argv = [normalize_option(a) for a in argv]
    verbose = "--verbose" in argv or os.environ.get("SLUKD_VERBOSE", "") not in ("", "0")
    argv = [a for a in argv if a != "--verbose"]
    if verbose:  # recipes run by `slukd train` read it too
        os.environ["SLUKD_VERBOSE"] = "1"
    parser = _parser()
    if not argv:
        parser.print_help()
        return 0
    head = argv[0]
    try:
        if head in COMMANDS and not isinstance(COMMANDS[head], dict):
            return _dispatch(COMMANDS[head][0], argv[1:], prog=f"slukd {head}")
        if head in COMMANDS and len(argv) >= 2 and argv[1] in COMMANDS[head]:
            return _dispatch(COMMANDS[head][argv[1]][0], argv[2:], prog=f"slukd {head} {argv[1]}")
        parser.parse_args(argv)  # --help, --version, or a usage error (exit 2)
        parser.print_help()
        return 2
    except Exception as err:
        from slukd.experiment import user_errors  # imported only now: `slukd --help` never imports torch

        if verbose or not isinstance(err, user_errors()):
            raise
        print(f"slukd {head}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
