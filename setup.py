"""Build hook: a wheel carries the recipes, their row files and the benchmarks as package data (``slukd/_data/``),
so ``slukd train``, ``slukd sweep`` and ``slukd bench`` work from an installed package (see slukd.resources).
Everything else is declared in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("recipes", "hparams", "benchmarks")


class BuildWithData(build_py):
    def run(self):
        super().run()
        root = Path(__file__).parent
        for name in DATA_DIRS:
            src, dst = root / name, Path(self.build_lib) / "slukd" / "_data" / name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
