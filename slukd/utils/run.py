"""Run-folder bookkeeping shared by the recipes: seeding, the record of how a run was made, compatibility checks."""

from __future__ import annotations

import hashlib
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


def config_fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class IncompatibleRunError(RuntimeError):
    """The output folder holds a run made with settings that change its results."""


def record_run(
    output_folder: str | os.PathLike,
    resolved_hparams_text: str,
    identity: dict[str, Any],
    argv: list[str] | None = None,
) -> Path:
    """Write ``run_info.json`` (command, code version, identity) and ``hparams_resolved.yaml`` into the run folder.

    ``identity`` holds the settings that define the results (method, seed, data, model...). When the folder already
    holds a run whose identity differs, :class:`IncompatibleRunError` is raised naming the differing keys, instead of
    silently mixing two runs' checkpoints and results.
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
        old_id = old.get("identity", {})
        diff = sorted(k for k in set(old_id) | set(identity) if old_id.get(k) != identity.get(k))
        if diff:
            details = ", ".join(f"{k}: {old_id.get(k)!r} -> {identity.get(k)!r}" for k in diff)
            raise IncompatibleRunError(
                f"{out} holds a run with other settings ({details}); use a new output folder or delete it"
            )
    info = {
        "command": " ".join([sys.executable] + list(sys.argv if argv is None else argv)),
        "code_version": code_version(),
        "identity": identity,
    }
    atomic_write_json(info_path, info)
    atomic_write_text(out / "hparams_resolved.yaml", resolved_hparams_text)
    return info_path
