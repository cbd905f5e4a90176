"""Teacher outputs for distillation, computed once per teacher and cached on disk.

- Pseudo-captions: the teacher's batched beam search (beam 3 by default) over every training and audio-only clip,
  stored by :class:`slukd.distill.PseudoLabeler` (key: teacher fingerprint + decoding settings).
- Clip embeddings: ``masked_mean(teacher.encode(wavs), wav_lens)`` [D_t] per clip, saved next to the
  pseudo-captions as ``emb_<key>.pt``. Encoder-level KD pools the teacher frames anyway (EncoderMSE/EncoderContrastive
  with pool=True), and clips are not augmented, so caching the pooled vector is exact and saves a teacher forward
  pass per step.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from slukd.captioning.data import iterate_batches
from slukd.distill import PseudoLabeler, Teacher, masked_mean
from slukd.models.decoding import beam_search

logger = logging.getLogger(__name__)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def teacher_targets(
    teacher: Teacher,
    rows: list[dict[str, Any]],
    cache_dir: str | os.PathLike,
    beam_size: int = 3,
    max_len: int = 22,
    batch_size: int = 32,
    bf16: bool = False,
) -> tuple[PseudoLabeler, dict[str, torch.Tensor]]:
    """Pseudo-captions (token lists) and pooled teacher embeddings for ``rows``; cached in ``cache_dir``."""
    device = teacher.device
    config = {"beam_size": beam_size, "max_len": max_len, "bf16": bf16, "kind": "caption"}
    embeddings: dict[str, torch.Tensor] = {}

    def decode_fn(batch) -> list[list[int]]:
        b = batch.to(device)
        with torch.no_grad(), _autocast(device, bf16):
            enc = teacher.run(lambda m: m.encode(b.wavs, b.wav_lens))
            hyps = beam_search(teacher.module, enc, b.wav_lens, beam_size=beam_size, max_len=max_len)
        pooled = masked_mean(enc.float(), b.wav_lens).cpu()
        for i, item_id in enumerate(batch.ids):
            embeddings[item_id] = pooled[i].clone()
        return [h[0].tokens for h in hyps]

    labeler = PseudoLabeler(decode_fn, cache_dir, teacher.fingerprint, config=config)
    emb_path = Path(cache_dir) / f"emb_{labeler.key}.pt"
    if emb_path.is_file():
        try:
            embeddings.update(torch.load(emb_path, map_location="cpu"))
        except Exception as err:
            raise ValueError(f"{emb_path}: unreadable teacher-embedding cache ({err}); delete it to recompute") from err
    todo = [r for r in rows if r["ID"] not in labeler or r["ID"] not in embeddings]
    if todo:
        logger.info("teacher targets: %d of %d clips to decode (beam %d)", len(todo), len(rows), beam_size)
        # PseudoLabeler skips batches whose labels are all cached; clear them so embeddings get computed too
        for r in todo:
            labeler.labels.pop(r["ID"], None)
        batches = iterate_batches(todo, batch_size, shuffle=False, sort_by_duration=True)
        labeler.ensure(batches, total=(len(todo) + batch_size - 1) // batch_size)
        tmp = emb_path.with_suffix(".tmp")
        torch.save(embeddings, tmp)
        os.replace(tmp, emb_path)
    missing = [r["ID"] for r in rows if r["ID"] not in embeddings]
    if missing:  # pragma: no cover - guarded above
        raise RuntimeError(f"teacher embeddings missing for {len(missing)} clips, e.g. {missing[:3]}")
    return labeler, embeddings
