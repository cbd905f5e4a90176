"""Whole-split decoding and caption metrics (never per batch), predictions and sample captions.

``evaluate_split`` decodes every clip (greedy or batched beam search through
:func:`slukd.train.decode.decode_dataset`, shared with the SLU recipe), then scores the whole split at once with
:func:`slukd.metrics.caption.caption_metrics`. ``write_outputs`` writes ``predictions_<split>.jsonl`` (ID,
prediction, references, per-clip CIDEr-D), ``metrics_<split>.json`` and ``samples_<split>.md`` (the first
``n_samples`` clips by ID: prediction next to its references) atomically.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from slukd.data.captions import WordVocab
from slukd.metrics.caption import caption_metrics
from slukd.train.decode import decode_dataset
from slukd.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

logger = logging.getLogger(__name__)


def evaluate_split(
    model,
    vocab: WordVocab,
    dataset,
    references: dict[str, list[str]],
    beam_size: int = 3,
    batch_size: int = 32,
    max_len: int = 22,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    progress: bool = True,
    metric_options: dict[str, Any] | None = None,
    on_batch: Any = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics, {clip ID: caption}) over the whole split: every clip decoded (beam search when ``beam_size`` > 1,
    sharded under DDP), then scored at once by :func:`slukd.metrics.caption.caption_metrics` (``metric_options``:
    its tokenizer, backend, METEOR and SPICE settings)."""
    t0 = time.monotonic()
    tokens = decode_dataset(
        model, dataset, beam_size=beam_size, batch_size=batch_size, max_len=max_len, device=str(device),
        precision=precision, progress=progress, desc="test", on_batch=on_batch, unpadded=True,
    )  # fmt: skip
    preds = {i: vocab.decode(t) for i, t in tokens.items()}
    decode_s = time.monotonic() - t0
    metrics = caption_metrics(preds, {i: references[i] for i in preds}, **(metric_options or {}))
    metrics["decode_seconds"] = round(decode_s, 2)
    metrics["beam_size"] = beam_size
    return metrics, preds


def write_outputs(
    out_dir: str | os.PathLike,
    split: str,
    metrics: dict[str, Any],
    preds: dict[str, str],
    rows: list[dict[str, Any]],
    n_samples: int = 20,
) -> None:
    """Write ``predictions_<split>.jsonl``, ``metrics_<split>.json`` and ``samples_<split>.md`` (atomic)."""
    out = Path(out_dir)
    per = metrics.get("per_item_CIDEr_D", {})
    refs = {r["ID"]: r["captions"] for r in rows}
    ids = sorted(preds)
    atomic_write_jsonl(
        out / f"predictions_{split}.jsonl",
        [{"ID": i, "prediction": preds[i], "references": refs[i], "CIDEr_D": round(per.get(i, 0.0), 4)} for i in ids],
    )
    atomic_write_json(
        out / f"metrics_{split}.json", {k: v for k, v in metrics.items() if not k.startswith("per_item_")}
    )
    lines = [f"# Sample captions ({split}, first {min(n_samples, len(ids))} clips by ID)", ""]
    for i in ids[:n_samples]:
        lines.append(f"**{i}** (CIDEr-D {per.get(i, 0.0):.2f})  ")
        lines.append(f"- predicted: *{preds[i] or '(empty)'}*")
        lines += [f"- reference: {c}" for c in refs[i]]
        lines.append("")
    atomic_write_text(out / f"samples_{split}.md", "\n".join(lines))
