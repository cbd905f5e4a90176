"""Run-folder bookkeeping shared by the recipes: seeding, the record of how a run was made, compatibility checks."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slukd.utils.io import atomic_write_json, atomic_write_text
from slukd.version import __version__


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``a b -- c d`` -> (``[a, b]``, ``[c, d]``): own arguments and those passed on (no ``--``: none)."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return list(argv[:i]), list(argv[i + 1 :])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def code_version() -> dict[str, Any]:
    """The package version and, when run from a git checkout, the commit and whether the tree is dirty."""
    info: dict[str, Any] = {"slukd": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        import speechbrain

        info["speechbrain"] = speechbrain.__version__
    except Exception:  # pragma: no cover
        pass
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        info["git_commit"] = commit
        info["git_dirty"] = bool(dirty)
    except Exception:
        pass
    return info


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (lists and scalars are leaves). A tagged node
    (``{"!new:Class": {args}}``) gives ``key: "!new:Class"`` and ``key.arg: value``."""
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    if len(d) == 1 and str(next(iter(d))).startswith("!") and prefix:
        tag, args = next(iter(d.items()))
        out[prefix.rstrip(".")] = tag
        if isinstance(args, dict):
            out.update(flatten(args, prefix))
        else:
            out[f"{prefix}args"] = args
        return out
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def settings_identity(resolved_text: str, exclude: set[str] | frozenset[str]) -> dict[str, Any]:
    """The settings that define a run's results: every resolved hparam (references resolved, ``!new:`` nodes as
    {tag: arguments}) minus the ``exclude`` keys (those that cannot change results, e.g. the output folder or the
    number of data-loader workers), flattened to dotted keys."""
    from ruamel.yaml import YAML

    from slukd.config import plain

    tree = YAML(typ="rt").load(resolved_text) or {}
    settings = {k: v for k, v in plain(tree).items() if k not in exclude}
    return flatten(settings)


#: identity fields added after the run record is first written (the data digest, once the data is prepared)
LATE_IDENTITY = ("data",)


class IncompatibleRunError(RuntimeError):
    """The output folder holds a run made with settings that change its results."""


def _show(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def record_run(
    output_folder: str | os.PathLike,
    resolved_hparams_text: str,
    identity: dict[str, Any],
    argv: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_info.json`` (command, code version, identity) and ``hparams_resolved.yaml`` into the run folder.

    ``identity`` holds what defines the results (row, seed, ``settings``: the resolved hparams minus an explicit
    exclude list, ...). When the folder already holds a run whose identity differs, :class:`IncompatibleRunError`
    names every differing setting with its old and new value, instead of silently mixing two runs' checkpoints and
    results; nothing is rewritten then. ``extra`` adds fields that are not part of the identity.
    """
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "run_info.json"
    identity = json.loads(json.dumps(identity, default=str))
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise IncompatibleRunError(f"{info_path}: unreadable ({err}); remove it or use another folder") from err
        # the data digest joins the identity after the data is prepared (slukd.utils.provenance); a changed corpus
        # is handled before that by the run's data_changed policy, so it is not compared here
        old_id = flatten({k: v for k, v in old.get("identity", {}).items() if k in identity or k not in LATE_IDENTITY})
        new_id = flatten(identity)
        diff = sorted(k for k in set(old_id) | set(new_id) if old_id.get(k, "<absent>") != new_id.get(k, "<absent>"))
        if diff:
            old_v, new_v = (lambda k: _show(old_id.get(k, "<absent>"))), (lambda k: _show(new_id.get(k, "<absent>")))
            shown = "; ".join(f"{k.removeprefix('settings.')}: {old_v(k)} -> {new_v(k)}" for k in diff[:12])
            more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
            raise IncompatibleRunError(
                f"{out} holds a finished or partial run with other settings: {shown}{more}. Use another output "
                "folder, delete this one, or rerun with the old settings"
            )
    info = {
        "command": " ".join([sys.executable] + list(sys.argv if argv is None else argv)),
        "code_version": code_version(),
        "identity": identity,
        **(extra or {}),
    }
    atomic_write_json(info_path, info)
    atomic_write_text(out / "hparams_resolved.yaml", resolved_hparams_text)
    return info_path
