"""``slukd bench``: lists the benchmark scripts. Benchmarks print ratios measured in one run, never absolute goals."""

from __future__ import annotations

import argparse
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def cli_main(argv: list[str], prog: str = "slukd bench") -> int:
    """Print every ``benchmarks/*.py`` with the first line of its docstring."""
    argparse.ArgumentParser(prog=prog, description=__doc__).parse_args(argv)
    if not BENCH_DIR.is_dir():
        print("benchmarks/ is not present (it ships with the source checkout, not the wheel)")
        return 1
    for path in sorted(BENCH_DIR.glob("*.py")):
        doc = ""
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith('"""'):
            doc = text.lstrip()[3:].split("\n", 1)[0].strip().rstrip('"')
        print(f"python benchmarks/{path.name:<28} {doc}")
    return 0
