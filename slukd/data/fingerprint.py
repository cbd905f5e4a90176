"""What a run was prepared from, so that a resumed run notices when its data changed in between.

A fingerprint records the metadata files a recipe read (SLURP jsonl, caption CSVs: size, modification time and a
sha256 of their bytes, cheap for text files) and every audio file the manifests name (size and modification time;
the audio bytes are hashed only with ``hash_audio=True``). :func:`compare` lists what changed in words: files
modified, added or removed, with examples. The recipes keep the first fingerprint in ``data_fingerprint.json`` and
:func:`check_data` applies the run's ``data_changed`` policy on a rerun:

- ``stop`` (default): stop before any work, naming what changed and the two explicit choices;
- ``restart``: delete the run's outputs (checkpoints, results, manifests, tokenizer) and start over on the new data;
- ``keep``: continue with the data prepared at the start (the run's manifests and tokenizer); items whose audio is
  gone are skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["DataChangedError", "fingerprint", "compare", "check_data", "FINGERPRINT_NAME", "POLICIES"]

FINGERPRINT_NAME = "data_fingerprint.json"
POLICIES = ("stop", "restart", "keep")


class DataChangedError(RuntimeError):
    """The data of a run changed between two invocations; the message says what and how to proceed."""


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(sources: Iterable[str | os.PathLike], audio: Iterable[str], hash_audio: bool = False) -> dict:
    """{"sources": {path: [size, mtime_ns, sha256]}, "audio": {path: [size, mtime_ns(, sha256)]}} (missing: None)."""
    src = {}
    for p in sorted({str(Path(s)) for s in sources}):
        st = _stat(p)
        src[p] = None if st is None else [*st, _sha(p)]
    aud = {}
    for p in sorted(set(map(str, audio))):
        st = _stat(p)
        aud[p] = None if st is None else (st + [_sha(p)] if hash_audio else st)
    return {"sources": src, "audio": aud}


def _examples(items: list[str], n: int = 3) -> str:
    shown = ", ".join(Path(i).name for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _differs(a: list, b: list) -> bool:
    """Entries [size, mtime_ns(, sha256)]: by size and content hash when both have one (a file touched but not
    changed is the same), else by size and modification time."""
    if len(a) > 2 and len(b) > 2:
        return a[0] != b[0] or a[2] != b[2]
    return a[:2] != b[:2]


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when the data is unchanged)."""
    out = []
    for kind in ("sources", "audio"):
        a, b = old.get(kind, {}), new.get(kind, {})
        added = sorted(set(b) - set(a))
        removed = sorted(k for k in set(a) - set(b)) + sorted(k for k in set(a) & set(b) if b[k] is None and a[k])
        changed = sorted(k for k in set(a) & set(b) if a[k] and b[k] and _differs(a[k], b[k]))
        what = "metadata file" if kind == "sources" else "audio file"
        if changed:
            if kind == "sources":
                out += [f"{k} changed (size {a[k][0]} -> {b[k][0]} bytes)" for k in changed]
            else:
                out.append(f"{len(changed)} {what}(s) modified ({_examples(changed)})")
        if added:
            out.append(f"{len(added)} {what}(s) added ({_examples(added)})")
        if removed:
            out.append(f"{len(removed)} {what}(s) removed or unreadable ({_examples(removed)})")
    return out


def check_data(out_dir: str | os.PathLike, current: dict, policy: str, outputs: Iterable[str]) -> str:
    """Compare ``current`` with the run's first fingerprint and apply ``policy`` (see the module docstring).
    ``outputs``: names of the run folder entries that ``restart`` deletes. Returns what happened: "new" (first
    fingerprint written), "same", "restarted" or "kept"."""
    if policy not in POLICIES:
        raise ValueError(f"data_changed must be one of {POLICIES}, got {policy!r}")
    out = Path(out_dir)
    path = out / FINGERPRINT_NAME
    if not path.is_file():
        atomic_write_json(path, current, indent=None)
        return "new"
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = compare(old, current)
    if not diff:
        return "same"
    what = "; ".join(diff)
    if policy == "stop":
        raise DataChangedError(
            f"the data of {out} changed since the run started: {what}. Rerun with --data_changed=restart to delete "
            "this run's results and start over on the new data, or --data_changed=keep to continue with the data "
            "prepared at the start (its manifests and tokenizer; items whose audio is gone are skipped and counted)"
        )
    if policy == "restart":
        logger.warning("data changed (%s): --data_changed=restart deletes the run's outputs and starts over", what)
        for name in outputs:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        atomic_write_json(path, current, indent=None)
        return "restarted"
    logger.warning("data changed (%s): --data_changed=keep continues with the data prepared at the start", what)
    return "kept"
