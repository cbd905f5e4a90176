"""Teacher targets computed once per teacher and cached on disk: hypotheses (seq-KD) and pooled embeddings
(encoder KD) of every item, by item ID. Both recipes use it (SLU: the rehearsal memory at the start of each task;
captioning: every training and audio-only clip).

The cache file ``<cache_dir>/targets_<key>.pt`` (key = sha256 of the teacher fingerprint and the settings that
change the targets: beam, length limit, precision, ...) holds ``{"fingerprint", "config", "hyps": {id: [tokens]},
"emb": {id: Tensor [D]}}``. With ``item_data`` (item ID -> a digest of the item's data: its audio bytes and how it
is loaded, :func:`audio_digest`) an entry is keyed by ``"<id>@<digest>"``: the same ID with other data (a clip
replaced, another crop) is another entry, computed anew, never read from the old one. The file is rewritten
atomically every ``flush_every`` new items, so a killed job resumes where it stopped; another teacher (or other
settings) never reads it. The recipe supplies ``compute_fn(batch) -> (hyps | None, emb [B, D] | None)``: it runs
the teacher exactly as the teacher was evaluated (same decoding and precision), so the targets are what the
reported teacher produces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from slukd.utils.io import atomic_torch_save

logger = logging.getLogger(__name__)

__all__ = ["TeacherTargets", "batch_ids", "audio_digest"]

CACHE_VERSION = 3


def audio_digest(path: str | Path, *settings: Any) -> str:
    """sha256 (16 hex digits) of a file's bytes and the loading ``settings`` (sample rate, crop, ...): the key of
    an item's data in a teacher-target cache."""
    h = hashlib.sha256(json.dumps([str(s) for s in settings]).encode("utf-8"))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def batch_ids(batch: Any) -> list[str]:
    """The item IDs of a batch: ``batch.id`` (SpeechBrain PaddedBatch), ``batch.ids`` or ``batch["id"|"ids"]``."""
    for name in ("id", "ids"):
        value = getattr(batch, name, None)
        if value is not None and not callable(value):
            return [str(i) for i in value]
    if isinstance(batch, Mapping):
        for name in ("id", "ids"):
            if name in batch:
                return [str(i) for i in batch[name]]
    raise ValueError(f"cannot find item IDs in a batch of type {type(batch).__name__}: expected .id, .ids or ['id']")


class TeacherTargets:
    """Cached teacher outputs (see the module docstring).

    Args:
        cache_dir: folder of the cache file.
        fingerprint: the teacher's weights (``Teacher.fingerprint``).
        config: settings that change the targets (part of the key and stored in the file).
        hyps / emb: which targets to compute (seq-KD needs hypotheses, encoder KD embeddings).
        flush_every: rewrite the cache after this many newly computed items.
        item_data: item ID -> digest of its data (see the module docstring); IDs not in it are keyed by ID alone.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        fingerprint: str,
        config: Mapping[str, Any] | None = None,
        hyps: bool = True,
        emb: bool = False,
        flush_every: int = 512,
        item_data: Mapping[str, str] | None = None,
    ) -> None:
        if not fingerprint or not isinstance(fingerprint, str):
            raise ValueError("TeacherTargets needs the teacher's fingerprint (a non-empty string)")
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.config = dict(config or {})
        self.want_hyps, self.want_emb = bool(hyps), bool(emb)
        self.flush_every = max(1, int(flush_every))
        self.item_data = {str(k): str(v) for k, v in (item_data or {}).items()}
        blob = json.dumps({"fingerprint": fingerprint, "config": self.config}, sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
        self.path = self.cache_dir / f"targets_{self.key}.pt"
        self.hyps: dict[str, list[int]] = {}
        self.emb: dict[str, torch.Tensor] = {}
        self.reload()

    def entry(self, item: str) -> str:
        """The cache key of an item: ``"<id>@<data digest>"`` (its ID alone when its data digest is unknown)."""
        digest = self.item_data.get(str(item))
        return str(item) if digest is None else f"{item}@{digest}"

    # ------------------------------------------------------------------ cache file
    def reload(self) -> int:
        """(Re)read the cache file if there is one; returns the number of items with every wanted target."""
        self.hyps, self.emb = {}, {}
        if not self.path.is_file():
            return 0
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise ValueError(f"{self.path}: unreadable teacher-target cache ({err}); delete it to recompute") from err
        if not isinstance(data, dict) or "hyps" not in data or "emb" not in data:
            raise ValueError(f"{self.path}: not a teacher-target cache (no 'hyps'/'emb'); delete it to recompute")
        if data.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.path}: field 'fingerprint' is {str(data.get('fingerprint'))[:16]}..., expected "
                f"{self.fingerprint[:16]}... (the cache belongs to another teacher)"
            )
        self.hyps = {str(k): [int(t) for t in v] for k, v in data["hyps"].items()}
        self.emb = {str(k): v for k, v in data["emb"].items()}
        n = len(set(self.hyps) | set(self.emb))
        logger.info("teacher targets: %d cached entries read from %s", n, self.path)
        return n

    def flush(self) -> Path:
        """Write the cache atomically."""
        state = {
            "version": CACHE_VERSION,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "hyps": self.hyps,
            "emb": self.emb,
        }
        return atomic_torch_save(state, self.path)

    # ------------------------------------------------------------------ access
    def ready_ids(self, ids: Iterable[str]) -> list[str]:
        """The IDs among ``ids`` that have every wanted target."""
        return [
            i
            for i in map(str, ids)
            if (not self.want_hyps or self.entry(i) in self.hyps) and (not self.want_emb or self.entry(i) in self.emb)
        ]

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The IDs among ``ids`` lacking a wanted target."""
        ready = set(self.ready_ids(ids))
        return [str(i) for i in ids if str(i) not in ready]

    def hyps_of(self, ids: Sequence[str]) -> list[list[int] | None]:
        """The hypotheses of ``ids`` (None where there is none)."""
        return [self.hyps.get(self.entry(str(i))) for i in ids]

    def emb_of(self, ids: Sequence[str], device: str | torch.device | None = None) -> torch.Tensor:
        """The embeddings of ``ids`` stacked [N, D]; a missing one raises KeyError naming it."""
        missing = [i for i in ids if self.entry(str(i)) not in self.emb]
        if missing:
            raise KeyError(f"no teacher embedding for item {missing[0]!r} in {self.path} (run ensure() over it first)")
        out = torch.stack([self.emb[self.entry(str(i))] for i in ids])
        return out if device is None else out.to(device)

    def emb_mean(self, ids: Iterable[str] | None = None) -> torch.Tensor | None:
        """Mean embedding over ``ids`` (default all cached items) [D], or None when there is none."""
        keys = list(self.emb) if ids is None else [self.entry(str(i)) for i in ids if self.entry(str(i)) in self.emb]
        if not keys:
            return None
        return torch.stack([self.emb[k] for k in keys]).float().mean(dim=0)

    # ------------------------------------------------------------------ computing
    def ensure(
        self,
        batches: Iterable[Any],
        compute_fn: Callable[[Any], tuple[Sequence[Sequence[int]] | None, torch.Tensor | None]],
        total: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        progress: bool = False,
    ) -> dict[str, int]:
        """Compute the targets of every batch that has an item lacking one; returns counts.

        ``compute_fn(batch) -> (hyps, emb)``: one token list per item and/or pooled embeddings [B, D] (None for a
        target that is not wanted). A batch whose items are all cached is skipped without running the teacher.
        Two runs filling the same cache at once take turns (a file lock): the second reuses the first's work.
        """
        import fcntl

        from tqdm import tqdm

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.cache_dir / f"targets_{self.key}.lock", "a+")  # noqa: SIM115 - held for the whole pass
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another run filling the same cache: wait, then take its work
        try:
            self.reload()
            return self._ensure(batches, compute_fn, total, on_batch, progress, tqdm)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            lock.close()

    def _ensure(self, batches, compute_fn, total, on_batch, progress, tqdm) -> dict[str, int]:
        computed = n_batches = since_flush = 0
        start = time.monotonic()
        for k, batch in enumerate(tqdm(batches, total=total, desc="teacher targets", disable=not progress), 1):
            ids = batch_ids(batch)
            todo = set(self.missing(ids))
            if not todo:
                continue
            hyps, emb = compute_fn(batch)
            if self.want_hyps and (hyps is None or len(hyps) != len(ids)):
                raise ValueError(
                    f"compute_fn returned {None if hyps is None else len(hyps)} hypotheses for a batch of {len(ids)}"
                )
            if self.want_emb and (emb is None or emb.shape[0] != len(ids)):
                raise ValueError(f"compute_fn returned no embedding row per item for a batch of {len(ids)}")
            emb_cpu = emb.detach().float().cpu() if self.want_emb else None
            for b, item in enumerate(ids):
                if item not in todo:
                    continue
                if self.want_hyps:
                    self.hyps[self.entry(item)] = [int(t) for t in hyps[b]]
                if self.want_emb:
                    self.emb[self.entry(item)] = emb_cpu[b].clone()
                todo.discard(item)  # a duplicate ID in a batch keeps the first
                computed += 1
                since_flush += 1
            n_batches += 1
            if since_flush >= self.flush_every:
                self.flush()
                since_flush = 0
            if on_batch is not None:
                on_batch(k)
        if since_flush or (computed and not self.path.exists()):
            self.flush()
        logger.info(
            "teacher targets: %d computed in %d batches (%.1f s) -> %s",
            computed,
            n_batches,
            time.monotonic() - start,
            self.path,
        )
        return {"computed": computed, "batches": n_batches}
