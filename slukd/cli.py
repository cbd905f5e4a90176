"""The ``slukd`` command line.

Each subcommand lives in the module that implements it and exposes ``cli_main(argv: list[str]) -> int``;
this file only dispatches, so adding a subcommand never touches another module.

    slukd score slurp --gold G --pred P      SLURP scoring              (slukd.metrics.slurp_scorer)
    slukd report RUN_DIR [RUN_DIR ...]       paper-style tables          (slukd.report)
    slukd synth slu --out DIR                built-in SLU speech corpus  (slukd.data.synth_slu)
    slukd synth scenes --out DIR             built-in captioning corpus  (slukd.data.synth_scenes)
    slukd bench                              list the benchmarks in benchmarks/
"""

from __future__ import annotations

import argparse
import importlib
import sys

from slukd.version import __version__

# subcommand -> (module, help); "synth" and "score" have a second level chosen by the first positional argument.
COMMANDS: dict[str, dict[str, tuple[str, str]] | tuple[str, str]] = {
    "score": {"slurp": ("slukd.metrics.slurp_scorer", "score SLURP-format predictions against gold jsonl")},
    "report": ("slukd.report", "aggregate run folders into a paper-style table (mean ± std over seeds)"),
    "synth": {
        "slu": ("slukd.data.synth_slu", "generate the built-in SLU speech corpus (SLURP schema, espeak-ng)"),
        "scenes": ("slukd.data.synth_scenes", "generate the built-in audio-captioning corpus"),
    },
    "bench": ("slukd.bench", "list the speed/memory benchmarks and how to run them"),
}


def _dispatch(module: str, argv: list[str], prog: str) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            print(f"{prog}: not available in this version ({module} is missing)", file=sys.stderr)
            return 2
        raise
    return int(mod.cli_main(argv, prog=prog) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slukd`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="slukd",
        description="Knowledge distillation for class-incremental SLU (SLURP) and efficient audio captioning.",
    )
    parser.add_argument("--version", action="version", version=f"slukd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in COMMANDS.items():
        if isinstance(spec, dict):
            p = sub.add_parser(name, help=f"{name}: " + ", ".join(spec), add_help=True)
            p.add_argument("what", choices=sorted(spec), help=" | ".join(f"{k}: {v[1]}" for k, v in spec.items()))
            p.add_argument("rest", nargs=argparse.REMAINDER)
        else:
            p = sub.add_parser(name, help=spec[1], add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
    if not argv:
        parser.print_help()
        return 0
    if argv[0] in COMMANDS and isinstance(COMMANDS[argv[0]], dict) and len(argv) >= 2 and argv[1] in COMMANDS[argv[0]]:
        module, _ = COMMANDS[argv[0]][argv[1]]
        from slukd.utils.logging import setup_logging

        setup_logging()
        return _dispatch(module, argv[2:], prog=f"slukd {argv[0]} {argv[1]}")
    if argv[0] in COMMANDS and not isinstance(COMMANDS[argv[0]], dict):
        module, _ = COMMANDS[argv[0]]
        from slukd.utils.logging import setup_logging

        setup_logging()
        return _dispatch(module, argv[1:], prog=f"slukd {argv[0]}")
    args = parser.parse_args(argv)  # prints usage / errors for anything else
    parser.print_help()
    return 0 if args.command is None else 2


if __name__ == "__main__":
    sys.exit(main())
