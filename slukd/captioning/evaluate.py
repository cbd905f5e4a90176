"""Whole-split decoding and caption metrics (never per batch), predictions and sample captions.

``evaluate_split`` decodes every clip (greedy or batched beam search through :mod:`slukd.models.decoding`), then
scores the whole split at once with :func:`slukd.metrics.caption.caption_metrics`. ``write_outputs`` writes
``predictions_<split>.jsonl`` (ID, prediction, references, per-clip CIDEr-D), ``metrics_<split>.json`` and
``samples_<split>.md`` (the first ``n_samples`` clips by ID: prediction next to its references) atomically.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from slukd.captioning.data import iterate_batches
from slukd.data.captions import WordVocab
from slukd.metrics.caption import caption_metrics
from slukd.models.decoding import beam_search, greedy_search
from slukd.models.seq2seq import Seq2Seq
from slukd.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

logger = logging.getLogger(__name__)


@torch.no_grad()
def decode_rows(
    model: Seq2Seq,
    vocab: WordVocab,
    rows: list[dict[str, Any]],
    beam_size: int = 3,
    batch_size: int = 32,
    max_len: int = 22,
    device: str | torch.device = "cpu",
    bf16: bool = False,
) -> dict[str, str]:
    """Clip ID -> decoded caption (beam search when ``beam_size`` > 1, else greedy)."""
    device = torch.device(device)
    model.eval()
    out: dict[str, str] = {}
    for batch in iterate_batches(rows, batch_size, shuffle=False, sort_by_duration=True):
        b = batch.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            enc = model.encode(b.wavs, b.wav_lens)
            if beam_size > 1:
                toks = [h[0].tokens for h in beam_search(model, enc, b.wav_lens, beam_size=beam_size, max_len=max_len)]
            else:
                toks = greedy_search(model, enc, b.wav_lens, max_len=max_len)
        for item_id, t in zip(batch.ids, toks):
            out[item_id] = vocab.decode(t)
    return out


def evaluate_split(
    model: Seq2Seq,
    vocab: WordVocab,
    rows: list[dict[str, Any]],
    beam_size: int = 3,
    batch_size: int = 32,
    max_len: int = 22,
    device: str | torch.device = "cpu",
    meteor: bool = True,
    spice_corenlp_dir: str | os.PathLike | None = None,
    bf16: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics, predictions) over the whole split."""
    t0 = time.monotonic()
    preds = decode_rows(model, vocab, rows, beam_size, batch_size, max_len, device, bf16)
    decode_s = time.monotonic() - t0
    refs = {r["ID"]: r["captions"] for r in rows}
    metrics = caption_metrics(preds, refs, meteor=meteor, spice_corenlp_dir=spice_corenlp_dir)
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
    out = Path(out_dir)
    per = metrics.get("per_item_CIDEr_D", {})
    refs = {r["ID"]: r["captions"] for r in rows}
    ids = sorted(preds)
    atomic_write_jsonl(
        out / f"predictions_{split}.jsonl",
        [{"ID": i, "prediction": preds[i], "references": refs[i], "CIDEr_D": round(per.get(i, 0.0), 4)} for i in ids],
    )
    atomic_write_json(out / f"metrics_{split}.json", {k: v for k, v in metrics.items() if k != "per_item_CIDEr_D"})
    lines = [f"# Sample captions ({split}, first {min(n_samples, len(ids))} clips by ID)", ""]
    for i in ids[:n_samples]:
        lines.append(f"**{i}** (CIDEr-D {per.get(i, 0.0):.2f})  ")
        lines.append(f"- predicted: *{preds[i] or '(empty)'}*")
        lines += [f"- reference: {c}" for c in refs[i]]
        lines.append("")
    atomic_write_text(out / f"samples_{split}.md", "\n".join(lines))
