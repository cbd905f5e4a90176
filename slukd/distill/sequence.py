"""Sequence-level knowledge distillation: teacher beam search -> pseudo-targets, cached by item ID and teacher.

Flow: at the start of a task (SLU: over the rehearsal memory) or of training (captioning: over all clips) a
:class:`PseudoLabeler` runs ``decode_fn`` (the teacher's batched beam search, supplied by the recipe) once over an
iterable of batches and stores one hypothesis per item ID in a JSON cache whose name depends on the teacher
fingerprint (and the decoding settings). Resuming, later epochs and reruns read the cache; a different teacher
never sees another teacher's labels. The student is then trained with cross-entropy on the hypotheses
(:func:`seq_targets`, :class:`SeqKDTargets`, :func:`sequence_nll`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["PseudoLabeler", "SeqTargets", "SeqKDTargets", "seq_targets", "sequence_nll", "batch_ids"]

Label = list[int] | str
CACHE_VERSION = 1


def batch_ids(batch: Any) -> list[str]:
    """The item IDs of a batch: ``batch.ids``, ``batch.id`` (SpeechBrain PaddedBatch), or ``batch["ids"|"id"]``."""
    for name in ("ids", "id"):
        if hasattr(batch, name) and not callable(getattr(batch, name)):
            return [str(i) for i in getattr(batch, name)]
    if isinstance(batch, Mapping):
        for name in ("ids", "id"):
            if name in batch:
                return [str(i) for i in batch[name]]
    raise ValueError(f"cannot find item IDs in batch of type {type(batch).__name__}: expected .ids, .id or ['id']")


def _normalise_label(label: Any, item_id: str) -> Label:
    if isinstance(label, str):
        return label
    if isinstance(label, torch.Tensor):
        label = label.tolist()
    try:
        return [int(t) for t in label]
    except (TypeError, ValueError) as err:
        raise ValueError(f"decode_fn returned an invalid label for item {item_id!r}: {label!r}") from err


class PseudoLabeler:
    """Teacher hypotheses cached on disk, keyed by item ID and teacher fingerprint.

    Args:
        decode_fn: ``decode_fn(batch) -> list[list[int]] | list[str]``, one hypothesis per item, in batch order
            (the teacher's batched beam search; the labeler knows nothing about the model).
        cache_dir: folder of the cache files ``pseudo_<key>.json``, key = sha256(fingerprint, config)[:16].
        fingerprint: identifies the teacher's weights, e.g. ``Teacher.fingerprint`` or
            :func:`~slukd.distill.teacher.fingerprint_state_dict`.
        config: decoding settings that change the hypotheses (beam size, length penalty, ...): part of the key.
        flush_every: the cache file is rewritten (atomically) after this many newly decoded items, so a crash
            mid-way keeps what was done.
        ids_fn: how to read item IDs from a batch (default :func:`batch_ids`).

    A batch whose IDs are all cached is skipped without decoding; a batch with any missing ID is decoded whole
    (the batch is ``decode_fn``'s unit), and only the missing IDs are stored. Call it from one process only
    (rank 0 under DDP) and let the others read the cache with :meth:`reload`.
    """

    def __init__(
        self,
        decode_fn: Callable[[Any], Sequence[Label]] | None,
        cache_dir: str | Path,
        fingerprint: str,
        config: Mapping[str, Any] | None = None,
        flush_every: int = 256,
        ids_fn: Callable[[Any], Sequence[str]] = batch_ids,
    ):
        if not fingerprint or not isinstance(fingerprint, str):
            raise ValueError("PseudoLabeler needs a non-empty teacher fingerprint string")
        self.decode_fn = decode_fn
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.config = dict(config or {})
        self.flush_every = max(1, int(flush_every))
        self.ids_fn = ids_fn
        key_src = json.dumps({"fingerprint": fingerprint, "config": self.config}, sort_keys=True, default=str)
        self.key = hashlib.sha256(key_src.encode("utf-8")).hexdigest()[:16]
        self.path = self.cache_dir / f"pseudo_{self.key}.json"
        self.labels: dict[str, Label] = {}
        self.n_decoded = 0  # items decoded by this object (not read from the cache)
        self.reload()

    def reload(self) -> int:
        """(Re)read the cache file if it exists; returns the number of cached labels."""
        self.labels = {}
        if not self.path.is_file():
            return 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.path}: corrupt pseudo-label cache (line {err.lineno}): {err.msg}") from err
        if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
            raise ValueError(f"{self.path}: not a pseudo-label cache (no 'labels' object)")
        if data.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.path}: field 'fingerprint' is {str(data.get('fingerprint'))[:16]}..., expected "
                f"{self.fingerprint[:16]}... (the cache belongs to another teacher)"
            )
        self.labels = {str(k): _normalise_label(v, k) for k, v in data["labels"].items()}
        logger.info("pseudo-labels: %d cached hypotheses read from %s", len(self.labels), self.path)
        return len(self.labels)

    def flush(self) -> Path:
        """Write the cache atomically."""
        atomic_write_json(
            self.path,
            {
                "version": CACHE_VERSION,
                "fingerprint": self.fingerprint,
                "config": self.config,
                "n": len(self.labels),
                "labels": self.labels,
            },
            indent=None,
        )
        return self.path

    def __contains__(self, item_id: str) -> bool:
        return str(item_id) in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The IDs among ``ids`` with no cached hypothesis."""
        return [str(i) for i in ids if str(i) not in self.labels]

    def ensure(self, batches: Iterable[Any], total: int | None = None) -> dict[str, int]:
        """Decode every batch that has an uncached ID and store the hypotheses; returns counts.

        ``total`` (number of batches, optional) only improves the progress log. Returns
        ``{"decoded": items newly decoded, "cached": items already there, "batches_decoded": ...}``.
        """
        if self.decode_fn is None:
            raise RuntimeError("PseudoLabeler.ensure needs a decode_fn (this one was built read-only)")
        decoded = cached = n_batches = since_flush = 0
        start = last_log = time.monotonic()
        for b_idx, batch in enumerate(batches):
            ids = [str(i) for i in self.ids_fn(batch)]
            todo = self.missing(ids)
            if not todo:
                cached += len(ids)
                continue
            hyps = self.decode_fn(batch)
            if hyps is None or len(hyps) != len(ids):
                raise ValueError(
                    f"decode_fn returned {None if hyps is None else len(hyps)} hypotheses for a batch of "
                    f"{len(ids)} items (batch {b_idx}, first ID {ids[0]!r})"
                )
            todo_set = set(todo)
            for item_id, hyp in zip(ids, hyps):
                if item_id in todo_set:
                    self.labels[item_id] = _normalise_label(hyp, item_id)
                    todo_set.discard(item_id)  # duplicate IDs in a batch: keep the first
            new = len(todo)
            decoded += new
            cached += len(ids) - new
            since_flush += new
            n_batches += 1
            self.n_decoded += new
            if since_flush >= self.flush_every:
                self.flush()
                since_flush = 0
            now = time.monotonic()
            if now - last_log > 30:
                of = f"/{total}" if total else ""
                logger.info(
                    "pseudo-labels: batch %d%s, %d decoded, %d cached (%.1f items/s)",
                    b_idx + 1,
                    of,
                    decoded,
                    cached,
                    decoded / max(now - start, 1e-9),
                )
                last_log = now
        if since_flush or (decoded and not self.path.exists()):
            self.flush()
        logger.info(
            "pseudo-labels: %d decoded in %d batches, %d already cached (%.1f s) -> %s",
            decoded,
            n_batches,
            cached,
            time.monotonic() - start,
            self.path,
        )
        return {"decoded": decoded, "cached": cached, "batches_decoded": n_batches}

    def get(self, ids: Iterable[str], default: Any = KeyError) -> list[Label | Any]:
        """The cached hypotheses of ``ids`` in order; a missing ID raises KeyError unless ``default`` is given."""
        out = []
        for i in ids:
            i = str(i)
            if i in self.labels:
                out.append(self.labels[i])
            elif default is KeyError:
                raise KeyError(f"no pseudo-label for item {i!r} in {self.path} (run ensure() over it first)")
            else:
                out.append(default)
        return out


@dataclass
class SeqTargets:
    """Decoder targets in SpeechBrain's layout for the batch rows ``rows``.

    tokens_bos [N, L+1] = [bos, y_1..y_n, pad...]; tokens_eos [N, L+1] = [y_1..y_n, eos, pad...];
    lens [N] relative lengths of tokens_bos/eos ((n+1)/(L+1)); tokens [N, L], tokens_lens [N] relative (n/L, an
    empty target gives 0); rows [N] the batch indices these targets belong to (select encoder outputs with it).
    """

    tokens_bos: torch.Tensor
    tokens_eos: torch.Tensor
    lens: torch.Tensor
    tokens: torch.Tensor
    tokens_lens: torch.Tensor
    rows: torch.Tensor

    def to(self, device: str | torch.device) -> SeqTargets:
        return SeqTargets(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def seq_targets(
    token_lists: Sequence[Sequence[int]],
    bos_index: int,
    eos_index: int,
    pad_index: int = 0,
    rows: Sequence[int] | torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> SeqTargets:
    """Pad token lists into :class:`SeqTargets` (see there for shapes); ``rows`` defaults to 0..N-1."""
    n = len(token_lists)
    seqs = [[int(t) for t in toks] for toks in token_lists]
    max_len = max((len(s) for s in seqs), default=0)
    tokens = torch.full((n, max_len), pad_index, dtype=torch.long)
    tokens_bos = torch.full((n, max_len + 1), pad_index, dtype=torch.long)
    tokens_eos = torch.full((n, max_len + 1), pad_index, dtype=torch.long)
    for i, s in enumerate(seqs):
        k = len(s)
        if k:
            tokens[i, :k] = torch.tensor(s, dtype=torch.long)
            tokens_bos[i, 1 : k + 1] = tokens[i, :k]
            tokens_eos[i, :k] = tokens[i, :k]
        tokens_bos[i, 0] = bos_index
        tokens_eos[i, k] = eos_index
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.float32)
    lens = (lengths + 1) / (max_len + 1)
    tokens_lens = lengths / max_len if max_len else torch.zeros(n)
    rows_t = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    if rows_t.shape != (n,):
        raise ValueError(f"rows must have one index per target: {tuple(rows_t.shape)} for {n} targets")
    out = SeqTargets(tokens_bos, tokens_eos, lens, tokens, tokens_lens, rows_t)
    return out.to(device) if device is not None else out


class SeqKDTargets:
    """How pseudo-labels join the gold targets: the seq-KD policy, as configured.

    ``merge(gold, pseudo)`` with gold = one token list per batch item and pseudo = one token list or ``None``
    (no pseudo-label, e.g. a new-task item when only the memory is pseudo-labelled) per item returns a dict of
    :class:`SeqTargets`:

    - ``mode="replace"``: ``{"sup": targets}``: the pseudo-label where there is one, else the gold one (all rows);
      also returns ``"is_pseudo"`` [B] bool.
    - ``mode="add"``: ``{"sup": gold targets (all rows), "seq_kd": pseudo targets (only rows with a pseudo-label)}``;
      the recipe computes a second CE on ``seq_kd`` (decoder run on ``enc[seq_kd.rows]``) as the KD term. No
      ``"seq_kd"`` entry when no item has a pseudo-label.
    - ``mode="gold"``: seq-KD off, ``{"sup": gold targets}``.

    ``encode_fn`` turns string hypotheses into token lists when the teacher stored text.
    """

    MODES = ("replace", "add", "gold")

    def __init__(
        self,
        mode: str,
        bos_index: int,
        eos_index: int,
        pad_index: int = 0,
        encode_fn: Callable[[str], list[int]] | None = None,
    ):
        if mode not in self.MODES:
            raise ValueError(f"SeqKDTargets mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.bos, self.eos, self.pad, self.encode_fn = mode, bos_index, eos_index, pad_index, encode_fn

    def _tokens(self, label: Label | None) -> list[int] | None:
        if label is None or not isinstance(label, str):
            return label
        if self.encode_fn is None:
            raise ValueError("pseudo-label is text but SeqKDTargets has no encode_fn to tokenise it")
        return list(self.encode_fn(label))

    def merge(
        self,
        gold: Sequence[Sequence[int]],
        pseudo: Sequence[Label | None] | None,
        device: str | torch.device | None = None,
    ) -> dict[str, Any]:
        """Build the targets of one batch (see the class docstring)."""
        n = len(gold)
        if pseudo is None or self.mode == "gold":
            pseudo = [None] * n
        if len(pseudo) != n:
            raise ValueError(f"gold and pseudo targets differ in batch size: {n} vs {len(pseudo)}")
        pseudo_tok = [self._tokens(p) for p in pseudo]
        has = torch.tensor([p is not None for p in pseudo_tok], dtype=torch.bool)
        mk = dict(bos_index=self.bos, eos_index=self.eos, pad_index=self.pad, device=device)
        if self.mode == "replace":
            chosen = [p if p is not None else g for g, p in zip(gold, pseudo_tok)]
            return {"sup": seq_targets(chosen, **mk), "is_pseudo": has if device is None else has.to(device)}
        out: dict[str, Any] = {"sup": seq_targets(gold, **mk)}
        if self.mode == "add" and bool(has.any()):
            rows = torch.nonzero(has).squeeze(1)
            out["seq_kd"] = seq_targets([pseudo_tok[i] for i in rows.tolist()], rows=rows, **mk)
        return out


def sequence_nll(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    lens: torch.Tensor | None = None,
    pad_index: int | None = None,
    item_weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Token cross-entropy that ignores padding: the CE of seq-KD (and of the supervised target).

    log_probs [B, L, V] (log-softmax outputs), targets [B, L] (e.g. ``tokens_eos``), lens [B] relative lengths
    (valid positions = first round(lens_b · L)) and/or pad_index (positions equal to it are ignored).
    loss = Σ_{b,l} w_b m_bl CE_bl / Σ_{b,l} w_b m_bl, CE_bl = -(1-ε) log p(y_bl) - ε/V Σ_v log p(v); 0 if none.
    """
    if log_probs.dim() != 3 or targets.shape != log_probs.shape[:2]:
        raise ValueError(f"need log_probs [B, L, V] and targets [B, L], got {tuple(log_probs.shape)}, {targets.shape}")
    batch, length, vocab = log_probs.shape
    mask = torch.ones(batch, length, dtype=torch.bool, device=log_probs.device)
    if lens is not None:
        n_valid = torch.round(lens.to(log_probs.device).float() * length).long().clamp(0, length)
        mask &= torch.arange(length, device=log_probs.device).unsqueeze(0) < n_valid.unsqueeze(1)
    if pad_index is not None:
        mask &= targets != pad_index
    m = mask.float()
    if item_weight is not None:
        w = torch.as_tensor(item_weight, device=log_probs.device).float()
        if w.shape != (batch,):
            raise ValueError(f"item_weight must have shape [B]=[{batch}], got {tuple(w.shape)}")
        m = m * w.unsqueeze(1)
    lp = log_probs.float()
    nll = -lp.gather(-1, targets.clamp(0, vocab - 1).unsqueeze(-1)).squeeze(-1)  # [B, L]
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll - label_smoothing * lp.mean(dim=-1)
    nll = torch.where(m > 0, nll, torch.zeros((), device=nll.device))
    denom = m.sum()
    if float(denom) == 0.0:
        return nll.sum() * 0.0
    return (nll * m).sum() / denom
