"""What a continual run's results were made from, recorded in every step result and keyed into task-1 sharing.

- :func:`data_digest`: a digest of the run's data fingerprint (``data_fingerprint.json``, written when the run first
  prepared its data): metadata files by size and sha256, audio files by size and modification time (and sha256 when
  ``data_fingerprint_audio`` is on). A corpus re-synthesised in the same folder gets new modification times, so it
  gets another digest even when its text is the same.
- :func:`code_record`: the package version and a fingerprint of the result-affecting code (the package's modules
  but those listed in :data:`slukd.continual.first_task.NOT_TASK_CODE`, plus the recipe; docstrings ignored) with
  one short hash per file, so a report can name the files that differ between two runs; torch and SpeechBrain
  versions are part of it. The captioning recipe adds its own modules (:data:`CAPTIONING_CODE`, left out of the
  SLU record because they cannot change an SLU run) and records it in ``results.json``.
- :func:`device_record`: the device the run computed on, in words (CPU model or GPU name).
- :func:`step_header`: the fields every ``results/step<k>.json`` carries (row, seed, device, code, data).
- :func:`first_task_key`: the key of the shared first-task cache: the settings that can change task 1, the code
  fingerprint and the data digest.
- :func:`record_data_identity`: adds the data digest to the identity in ``run_info.json`` (``slukd report`` never
  averages runs made on different data).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slukd.utils.io import atomic_write_json

__all__ = [
    "CAPTIONING_CODE",
    "code_record",
    "data_digest",
    "device_record",
    "first_task_key",
    "record_data_identity",
    "step_header",
]


def data_digest(out_dir: str | os.PathLike) -> str | None:
    """sha256 (16 hex digits) of the run's ``data_fingerprint.json`` without the metadata files' modification times
    (a metadata file touched but not changed keeps its digest, as in :func:`slukd.data.fingerprint.compare`), file
    names taken relative to the corpus folder; None when the run has no fingerprint (yet)."""
    from slukd.data.fingerprint import FINGERPRINT_NAME

    path = Path(out_dir) / FINGERPRINT_NAME
    if not path.is_file():
        return None
    fp = json.loads(path.read_text(encoding="utf-8"))
    src, aud = fp.get("sources") or {}, fp.get("audio") or {}
    # paths relative to the corpus folder (their common parent), so a relative and an absolute data_folder agree
    keys = list(src) + list(aud)
    root = os.path.commonpath([os.path.dirname(k) for k in keys]) if keys else ""

    def rel(k: str) -> str:
        return os.path.relpath(k, root) if root else k

    sources = {rel(k): (v if v is None or len(v) < 3 else [v[0], v[2]]) for k, v in src.items()}
    blob = json.dumps({"sources": sources, "audio": {rel(k): v for k, v in aud.items()}}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


#: modules outside the SLU record that can change a captioning run (its package, the paper's model pair, the caption
#: metrics, the scenes corpus and the caption vocabulary)
CAPTIONING_CODE = ("captioning/", "models/paper_caption.py", "metrics/caption.py", "data/synth_scenes.py",
                   "data/captions.py")  # fmt: skip


@functools.lru_cache(maxsize=8)
def _code_files(extra: tuple[str, ...], include: tuple[str, ...] = ()) -> dict[str, str]:
    from slukd.continual.first_task import NOT_TASK_CODE, _code_of

    pkg = Path(__file__).resolve().parents[1]
    left_out = tuple(p for p in NOT_TASK_CODE if p not in include)
    files = [p for p in sorted(pkg.rglob("*.py")) if not str(p.relative_to(pkg)).startswith(left_out)]
    out = {}
    for p in files + [Path(f).resolve() for f in extra]:
        name = str(p.relative_to(pkg)) if p.is_relative_to(pkg) else f"recipe:{p.name}"
        out[name] = hashlib.sha256(_code_of(p)).hexdigest()[:10]
    return out


def code_record(extra_files: Sequence[str | os.PathLike] = (), include: Sequence[str] = ()) -> dict[str, Any]:
    """``{"slukd": version, "torch", "speechbrain", "fingerprint": 16 hex digits, "files": {path: 10 hex digits}}``
    of the result-affecting code (see the module docstring); ``include``: entries of ``NOT_TASK_CODE`` to count in
    (e.g. :data:`CAPTIONING_CODE`); computed once per process."""
    import speechbrain
    import torch

    from slukd.version import __version__

    files = _code_files(tuple(str(f) for f in extra_files), tuple(include))
    versions = {"torch": torch.__version__, "speechbrain": speechbrain.__version__}
    blob = json.dumps({"files": files, **versions}, sort_keys=True).encode()
    return {"slukd": __version__, **versions, "fingerprint": hashlib.sha256(blob).hexdigest()[:16],
            "files": dict(files)}  # fmt: skip


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_record(device: str | None) -> dict[str, Any]:
    """``{"device": "cpu" | "cuda:0" ..., "name": CPU model or GPU name, "cpus": logical CPUs}``."""
    import torch

    dev = str(device or "cpu")
    name = _cpu_name()
    if dev.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(dev).index
        name = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
    return {"device": dev, "name": name, "cpus": os.cpu_count()}


def step_header(
    hparams: Mapping[str, Any], device: str | None, out_dir: str | os.PathLike, recipe_file: str | os.PathLike
) -> dict[str, Any]:
    """Fields copied into every step result: row, seed, ``device`` (:func:`device_record`), ``code``
    (:func:`code_record` of the package and ``recipe_file``) and ``data_digest`` (:func:`data_digest`)."""
    return {
        "row": hparams["row"],
        "seed": hparams["seed"],
        "device": device_record(device),
        "code": code_record([recipe_file]),
        "data_digest": data_digest(out_dir),
    }


def first_task_key(
    out_dir: str | os.PathLike,
    exclude: frozenset[str] | set[str],
    recipe_file: str | os.PathLike,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Key of the shared first-task cache (:class:`slukd.continual.first_task.FirstTaskCache`): the run's resolved
    settings but ``exclude`` (those that cannot change task 1), the code fingerprint (package and recipe, torch and
    SpeechBrain versions) and the data digest, so that a corpus re-synthesised in the same folder never reuses a task
    1 trained on the old one. ``extra`` adds fields (e.g. the plugins that can change task 1)."""
    from slukd.continual.first_task import FirstTaskCache, code_fingerprint
    from slukd.utils.run import settings_identity

    out = Path(out_dir)
    settings = settings_identity((out / "hparams_resolved.yaml").read_text(encoding="utf-8"), exclude)
    settings.update(extra or {})
    settings["code"] = code_fingerprint([recipe_file])
    settings["data"] = data_digest(out)
    return FirstTaskCache.key(settings)


def record_data_identity(out_dir: str | os.PathLike) -> str | None:
    """Add the data digest to the identity in ``<out_dir>/run_info.json`` (main process); returns the digest. A
    rerun on changed data is handled before this by the run's ``data_changed`` policy, so the digest is the one of
    the data the run uses."""
    out = Path(out_dir)
    digest = data_digest(out)
    path = out / "run_info.json"
    if path.is_file():
        info = json.loads(path.read_text(encoding="utf-8"))
        info.setdefault("identity", {})["data"] = digest
        atomic_write_json(path, info)
    return digest
