"""A cache of finished first tasks, shared by the rows of a sweep.

For a given seed, every continual row but the joint one trains task 1 identically: no memory and no teacher exist
yet, so the memory and KD settings (and the row's name) cannot change it. The first run that needs a task 1 trains
it and publishes it here; the others take it. An entry is keyed by a fingerprint of exactly the settings that can
change task 1 (data, scenario, tokenizer, model, optimisation, decoding, seed) and of the code (the source of the
package and the recipe, torch and SpeechBrain versions).

Concurrency and crashes: a run that wants an entry holds an exclusive ``flock`` on ``<key>.lock`` while it checks,
trains and publishes; a second run waits on the lock and then takes the entry (the kernel drops the lock when its
holder dies, even by ``kill -9``, and the next run trains task 1 itself). An entry is published atomically: its
files are written into a temporary folder, ``COMPLETE`` last, and the folder is renamed into place, so a half
written entry is never read.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["FirstTaskCache", "code_fingerprint"]


#: package files that cannot change a continual run's task 1 (other recipes, reports, command line, docs)
NOT_TASK_CODE = ("captioning/", "report/", "export/", "cli.py", "cli_train.py", "sweep.py", "demo.py", "inference/",
                 "checks.py", "bench.py", "resources.py", "metrics/caption.py", "data/synth_scenes.py",
                 "data/captions.py", "models/paper_caption.py", "data/fingerprint.py", "models/inference_opt.py",
                 "utils/lock.py", "utils/logging.py", "utils/faults.py", "utils/provenance.py",
                 "experiment.py")  # fmt: skip


def _code_of(path: Path) -> bytes:
    """The file's code without docstrings (an AST dump), so documentation edits keep the cache."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


def code_fingerprint(extra_files: list[str | os.PathLike] = ()) -> str:
    """sha256 of the code that can change a continual run's first task: the package's Python modules (but
    :data:`NOT_TASK_CODE`), ``extra_files`` (the recipe), without docstrings; and the torch/SpeechBrain versions."""
    import speechbrain
    import torch

    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"torch {torch.__version__} speechbrain {speechbrain.__version__}\n".encode())
    files = [p for p in sorted(pkg.rglob("*.py")) if not str(p.relative_to(pkg)).startswith(NOT_TASK_CODE)]
    for p in files + [Path(f) for f in extra_files]:
        h.update(str(p.relative_to(pkg) if p.is_relative_to(pkg) else p.name).encode() + b"\0")
        h.update(_code_of(p))
    return h.hexdigest()[:16]


class FirstTaskCache:
    """Entries ``<root>/<key>/`` (see the module docstring)."""

    COMPLETE = "COMPLETE"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @staticmethod
    def key(settings: Mapping[str, Any]) -> str:
        """Fingerprint of the task-1 settings (JSON-serialisable mapping, code fingerprint included)."""
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def entry(self, key: str) -> Path | None:
        """The finished entry of ``key``, or None."""
        path = self.root / key
        return path if (path / self.COMPLETE).is_file() else None

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[Path | None]:
        """Hold the entry's lock for the body; yields the finished entry (None: the holder should train task 1
        and :meth:`publish` it before leaving the body)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_path = self.root / f"{key}.lock"
        with open(lock_path, "a+") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("first task %s: another run is training it; waiting for it (%s)", key, lock_path)
                t0 = time.monotonic()
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                logger.info("first task %s: lock acquired after %.0f s", key, time.monotonic() - t0)
            try:
                yield self.entry(key)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def publish(self, key: str, files: Mapping[str, Path], meta: Mapping[str, Any]) -> Path:
        """Copy ``files`` ({name in the entry: source file}) and ``meta`` into the entry of ``key``, atomically."""
        final = self.root / key
        tmp = self.root / f".{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, src in files.items():
            shutil.copy2(src, tmp / name)
        atomic_write_json(tmp / "meta.json", dict(meta))
        (tmp / self.COMPLETE).write_text("ok\n", encoding="utf-8")
        if final.exists():  # an incomplete leftover (no COMPLETE): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        logger.info("first task published to the shared cache: %s", final)
        return final

    def restore(self, entry: Path, task_dir: Path) -> dict[str, Any]:
        """Copy an entry's files into ``task_dir``; returns its meta."""
        task_dir.mkdir(parents=True, exist_ok=True)
        for f in entry.iterdir():
            if f.name not in (self.COMPLETE, "meta.json"):
                shutil.copy2(f, task_dir / f.name)
        return json.loads((entry / "meta.json").read_text(encoding="utf-8"))
