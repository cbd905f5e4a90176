"""Decoding a dataset, SLURP-format predictions and the per-step scores of the class-incremental recipe.

- :func:`decode_items`: batched decoding (greedy or beam search from :mod:`slukd.models.decoding`) of a dataset,
  returning one hypothesis text per item ID.
- :func:`predictions`: parsed hypotheses -> SLURP prediction dicts ``{"file", "scenario", "action", "entities"}``
  (``file`` = the recording's file name, the key of SLURP's per-recording scoring).
- :func:`score_step`: intent accuracy, WER (transcript part only) and SLU-F1 per task seen and over all seen items.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from speechbrain.dataio.dataloader import make_dataloader
from tqdm import tqdm

from slukd.data.target import ParseStats, parse
from slukd.metrics.slurp_scorer import score_slurp
from slukd.metrics.wer import wer
from slukd.models.decoding import beam_search, greedy_search

logger = logging.getLogger(__name__)


def greedy_decode(model, enc: torch.Tensor, lens: torch.Tensor, max_len: int = 100) -> list[list[int]]:
    """Batched greedy decoding (``slukd.models.decoding.greedy_search``): enc [B, T', D] -> one token list per item
    (no bos/eos), at most ``max_len`` tokens (and at most one per valid encoder frame)."""
    return greedy_search(model, enc, lens, max_len=max_len)


def beam_decode(model, enc: torch.Tensor, lens: torch.Tensor, beam_size: int, max_len: int = 100) -> list[list[int]]:
    """Batched beam search (``slukd.models.decoding.beam_search``, best hypothesis); greedy when ``beam_size`` is 1."""
    if beam_size <= 1:
        return greedy_decode(model, enc, lens, max_len)
    return [h[0].tokens for h in beam_search(model, enc, lens, beam_size=beam_size, max_len=max_len)]


@torch.no_grad()
def decode_items(
    model,
    dataset,
    tokenizer,
    beam_size: int = 1,
    batch_size: int = 16,
    max_len: int = 100,
    device: str = "cpu",
    precision: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "decode",
    token_ids: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode every item of ``dataset`` (with ``id`` and ``sig`` keys); returns {ID: text} (or {ID: token list}
    with ``token_ids``). The model is put in eval mode; bf16 autocast when ``precision`` is given. ``on_batch(k)``
    is called after the k-th batch (1-based)."""
    was_training = model.training
    model.eval()
    loader = make_dataloader(dataset, batch_size=batch_size, shuffle=False)
    out: dict[str, Any] = {}
    try:
        for k, batch in enumerate(tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True), start=1):
            batch = batch.to(device)
            wavs, lens = batch.sig
            with torch.autocast(device_type=torch.device(device).type, dtype=precision, enabled=precision is not None):
                enc = model.encode(wavs, lens)
                hyps = beam_decode(model, enc, lens, beam_size, max_len)
            for item_id, h in zip(batch.id, hyps):
                out[item_id] = list(h) if token_ids else tokenizer.decode(list(h))
            if on_batch is not None:
                on_batch(k)
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def encoder_features(model, dataset, batch_size: int = 16, device: str = "cpu", progress: bool = True) -> torch.Tensor:
    """Time-pooled encoder outputs ([N, D], masked mean over valid frames) of every item, in dataset order (the
    herding features)."""
    from slukd.distill import masked_mean

    was_training = model.training
    model.eval()
    feats = []
    try:
        loader = make_dataloader(dataset, batch_size=batch_size, shuffle=False)
        for batch in tqdm(loader, desc="features", disable=not progress, dynamic_ncols=True):
            batch = batch.to(device)
            wavs, lens = batch.sig
            feats.append(masked_mean(model.encode(wavs, lens), lens).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def recording_key(wav: str) -> str:
    """The SLURP prediction key of a manifest row: the audio file name."""
    return os.path.basename(str(wav))


def predictions(rows: Sequence[dict], hyps: dict[str, str], stats: ParseStats | None = None) -> list[dict]:
    """SLURP predictions of ``rows`` (manifest dicts) from their hypotheses; rows without a hypothesis are skipped."""
    out = []
    for r in rows:
        if r["ID"] not in hyps:
            continue
        p = parse(hyps[r["ID"]], stats)
        out.append(
            {
                "file": recording_key(r["wav"]),
                "scenario": p.scenario,
                "action": p.action,
                "entities": [{"type": e["type"], "filler": e["filler"]} for e in p.entities],
                "transcript": p.transcript,
                "id": r["ID"],
            }
        )
    return out


def _metrics(rows: Sequence[dict], preds_by_id: dict[str, dict]) -> dict[str, float]:
    gold = [
        {
            "key": recording_key(r["wav"]),
            "scenario": r["scenario"],
            "action": r["action"],
            "entities": r["entities"],
        }
        for r in rows
    ]
    preds = [{**preds_by_id[r["ID"]], "key": recording_key(r["wav"])} for r in rows if r["ID"] in preds_by_id]
    scores = score_slurp(gold, preds, missing="error", bad_entities="skip")
    refs = [r["transcript"] for r in rows]
    hyps = [preds_by_id[r["ID"]]["transcript"] if r["ID"] in preds_by_id else "" for r in rows]
    return {
        "n": len(rows),
        "intent_acc": scores.intent_acc,
        "scenario_acc": scores.scenario_acc,
        "wer": wer(refs, hyps) if rows else float("nan"),
        "slu_f1": scores.slu_f1,
        "span_f1": scores.span_f1,
    }


def score_step(
    rows: Sequence[dict],
    preds: Sequence[dict],
    task_of: Callable[[str], int | None],
    step: int,
) -> dict[str, Any]:
    """Scores after ``step`` (0-based) of the test ``rows`` of every seen task: ``per_task`` (one dict per task
    0..step) and ``seen`` (all those rows). Missing predictions count as errors."""
    by_id = {p["id"]: p for p in preds}
    per_task = []
    for j in range(step + 1):
        sub = [r for r in rows if task_of(r["scenario"]) == j]
        per_task.append({"task": j + 1, **_metrics(sub, by_id)})
    seen = [r for r in rows if (k := task_of(r["scenario"])) is not None and k <= step]
    return {"per_task": per_task, "seen": _metrics(seen, by_id)}
