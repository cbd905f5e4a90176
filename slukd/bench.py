"""``slukd bench [NAME [args]]``: list the benchmark scripts, or run one. Benchmarks print ratios measured in one
run (a baseline beside the thing measured), never absolute goals."""

from __future__ import annotations

import argparse
import runpy
import sys

from slukd.resources import benchmarks_dir


def cli_main(argv: list[str], prog: str = "slukd bench") -> int:
    """Without a name: every ``benchmarks/*.py`` with the first line of its docstring. With one: run it."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, add_help=False,
        epilog="example: slukd bench padding --help   (a benchmark's own options and defaults)",
    )  # fmt: skip
    p.add_argument("name", nargs="?", default=None, help="benchmark to run (file name without .py; default: list them)")
    p.add_argument("-h", "--help", action="store_true", help="this help, or the benchmark's with NAME")
    args, rest = p.parse_known_args(argv)
    folder = benchmarks_dir()
    if args.name is None:
        if args.help:
            p.print_help()
            return 0
        for path in sorted(folder.glob("*.py")):
            text = path.read_text(encoding="utf-8").lstrip()
            doc = text[3:].split("\n", 1)[0].strip().rstrip('"') if text.startswith('"""') else ""
            print(f"{path.stem:<24} {doc}")
        print(f"\nrun one: {prog} NAME [its options]   (scripts in {folder})")
        return 0
    script = folder / f"{args.name}.py"
    if not script.is_file():
        names = ", ".join(q.stem for q in sorted(folder.glob("*.py")))
        raise FileNotFoundError(f"no benchmark {args.name!r} in {folder}; benchmarks: {names}")
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *rest, *(["--help"] if args.help else [])]
    sys.path.insert(0, str(folder.parent))  # benchmarks import each other as benchmarks.<name>
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    return 0
