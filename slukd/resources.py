"""Where the recipes, their row files and the benchmarks are: in a source checkout (``recipes/``, ``hparams/``,
``benchmarks/`` next to the package) or, in an installed wheel, in the package data ``slukd/_data/`` (copied there
at build time). ``--hparams_dir`` (or ``$SLUKD_HPARAMS``) points at a user's own row files instead."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["RECIPES", "data_root", "hparams_dir", "recipe_path", "benchmarks_dir", "list_rows", "resolve_row"]

#: recipe name -> (script, row folder)
RECIPES = {"slu": ("slurp_incremental.py", "slurp_incremental"), "captioning": ("captioning_kd.py", "captioning_kd")}


class ResourceError(FileNotFoundError):
    """A recipe, row file or folder that cannot be found; the message says where it looked."""


def data_root() -> Path:
    """The folder holding ``recipes/``, ``hparams/`` and ``benchmarks/``."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "recipes").is_dir() and (checkout / "hparams").is_dir():
        return checkout
    packaged = Path(str(resources.files("slukd") / "_data"))
    if (packaged / "hparams").is_dir():
        return packaged
    raise ResourceError(f"neither a source checkout ({checkout}) nor packaged data ({packaged}) holds the recipes")


def _recipe(name: str) -> tuple[str, str]:
    if name not in RECIPES:
        raise ResourceError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def hparams_dir(recipe: str, override: str | os.PathLike | None = None) -> Path:
    """The row files of ``recipe`` (``override`` / ``$SLUKD_HPARAMS`` / the shipped ones)."""
    folder = _recipe(recipe)[1]
    base = override or os.environ.get("SLUKD_HPARAMS")
    if base:
        path = Path(base)
        path = path / folder if (path / folder).is_dir() else path
    else:
        path = data_root() / "hparams" / folder
    if not path.is_dir():
        raise ResourceError(f"hparams folder not found: {path}")
    return path


def recipe_path(recipe: str) -> Path:
    """The recipe script of ``recipe``."""
    path = data_root() / "recipes" / _recipe(recipe)[0]
    if not path.is_file():
        raise ResourceError(f"recipe script not found: {path}")
    return path


def benchmarks_dir() -> Path:
    """The benchmark scripts."""
    return data_root() / "benchmarks"


def list_rows(recipe: str, override: str | os.PathLike | None = None) -> list[str]:
    """Row names of ``recipe`` (every ``*.yaml`` of its folder but the ``base*`` files)."""
    return sorted(p.stem for p in hparams_dir(recipe, override).glob("*.yaml") if not p.stem.startswith("base"))


def resolve_row(recipe: str, row: str, override: str | os.PathLike | None = None) -> Path:
    """A row file: ``row`` itself when it is a file, else ``<hparams_dir>/<row>.yaml``."""
    path = Path(row)
    if path.is_file():
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else row
    candidate = hparams_dir(recipe, override) / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    rows = ", ".join(list_rows(recipe, override))
    raise ResourceError(f"no row file {row!r} for recipe {recipe} (looked in {candidate.parent}); rows: {rows}")
