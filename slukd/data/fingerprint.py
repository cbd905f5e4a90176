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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["DataChangedError", "fingerprint", "compare", "check_data", "FINGERPRINT_NAME", "POLICIES", "data_files",
           "check_run_data", "run_data_changes", "fingerprint_digest"]

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


# ---------------------------------------------------------------------------------------------------- both recipes
_AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3")


def data_files(recipe: str, hp: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(metadata files, audio files) a run of ``recipe`` ("slu" | "captioning") reads, from its hparams: SLU the
    SLURP split jsonl files and every audio file of ``slurp_real`` / ``slurp_synth`` / ``audio``; captioning every
    CSV and audio file of the corpus folder and of ``audio_only_folder``."""
    data = Path(hp["data_folder"])
    if recipe == "slu":
        splits = ["train", "devel", "test"] + (["train_synthetic"] if hp.get("use_synthetic") else [])
        sources = [data / "dataset" / "slurp" / f"{s}.jsonl" for s in splits]
        dirs = [data / d for d in ("slurp_real", "slurp_synth", "audio")]
        audio = [str(p) for d in dirs if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in _AUDIO_EXTS]
        return [str(p) for p in sources if p.is_file()], audio
    if recipe != "captioning":
        raise ValueError(f"recipe must be 'slu' or 'captioning', got {recipe!r}")
    files = [p for p in data.rglob("*") if p.is_file()] if data.is_dir() else []
    sources = [str(p) for p in files if p.suffix.lower() == ".csv"]
    audio = [str(p) for p in files if p.suffix.lower() in _AUDIO_EXTS]
    if hp.get("audio_only_folder"):
        audio += [str(p) for p in Path(hp["audio_only_folder"]).rglob("*") if p.suffix.lower() in _AUDIO_EXTS]
    return sources, audio


def check_run_data(recipe: str, hp: Mapping[str, Any], out: str | os.PathLike, outputs: Iterable[str]) -> str:
    """The one data policy of both recipes, applied before any other work of a run (a finished run included): the
    run's data (:func:`data_files`) against its first fingerprint, with the run's ``data_changed`` policy
    (:func:`check_data`; ``restart`` deletes ``outputs``, the results that mark a finished run among them). Main
    process only (the others get "new"); returns the state."""
    from speechbrain.utils.distributed import if_main_process

    if not if_main_process():
        return "new"
    if not Path(hp["data_folder"]).is_dir():
        raise FileNotFoundError(f"data folder not found: {hp['data_folder']}")
    sources, audio = data_files(recipe, hp)
    return check_data(out, fingerprint(sources, audio, bool(hp["data_fingerprint_audio"])), hp["data_changed"],
                      outputs)  # fmt: skip


def run_data_changes(recipe: str, run_folder: str | os.PathLike) -> list[str]:
    """What changed in the data of the run in ``run_folder`` since it started, in words (empty when nothing did, or
    when the run has no fingerprint yet): the check ``slukd sweep`` makes before it calls a finished run done. The
    run's settings come from its ``hparams_resolved.yaml``."""
    from ruamel.yaml import YAML

    from slukd.config import plain

    run = Path(run_folder)
    fp, hp_file = run / FINGERPRINT_NAME, run / "hparams_resolved.yaml"
    if not fp.is_file() or not hp_file.is_file():
        return []
    hp = plain(YAML(typ="rt").load(hp_file.read_text(encoding="utf-8")) or {})
    if not Path(str(hp.get("data_folder", ""))).is_dir():
        return [f"data folder {hp.get('data_folder')} not found"]
    sources, audio = data_files(recipe, hp)
    old = json.loads(fp.read_text(encoding="utf-8"))
    return compare(old, fingerprint(sources, audio, bool(hp.get("data_fingerprint_audio"))))


def fingerprint_digest(run_folder: str | os.PathLike) -> str:
    """sha256 of a run's data fingerprint (``data_fingerprint.json``; "" when it has none): a key part for caches
    shared between runs (the first-task cache), so that a cache entry made on other data is never taken."""
    path = Path(run_folder) / FINGERPRINT_NAME
    if not path.is_file():
        return ""
    fp = json.loads(path.read_text(encoding="utf-8"))
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode("utf-8")).hexdigest()
