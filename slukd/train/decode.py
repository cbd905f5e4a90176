"""Decoding a whole dataset, shared by both recipes: test sets, validation, teacher targets, pooled features.

Datasets are SpeechBrain ``DynamicItemDataset`` s whose items provide ``id`` and ``sig`` (waveform). Decoding is
batched greedy or beam search from :mod:`slukd.models.decoding` in the given autocast precision. Under DDP
(``shard=True`` with an initialised process group) every process decodes every ``world``-th batch and the results
are gathered, so evaluation is spread over the processes; every process returns the whole result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from speechbrain.dataio.dataloader import make_dataloader
from tqdm import tqdm

from slukd.distill.encoder import masked_mean
from slukd.models.decoding import beam_search, greedy_search
from slukd.utils.distributed import rank_and_world

__all__ = ["decode", "decode_dataset", "pooled_features", "autocast", "teacher_target_fn", "encode_unpadded"]


def autocast(device: str | torch.device, precision: str | torch.dtype | None):
    """torch.autocast for a precision name (``fp32`` = off, ``bf16``, ``fp16``) or dtype on ``device``."""
    if isinstance(precision, str):
        precision = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    dev = torch.device(device).type
    return torch.autocast(device_type=dev, dtype=precision, enabled=precision is not None)


def encode_unpadded(model, wavs: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs of a padded batch in which padding cannot change any item: every item is encoded at its own
    length (items of equal length together), then the outputs are zero-padded to the longest.

    wavs [B, S], lens [B] relative (item b has ``L_b = round(lens_b * S)`` samples) -> (enc [B, T', D], enc_lens [B])
    with ``enc_lens_b = T'_b / T'`` (``T'_b`` the frames of item b encoded alone), so ``round(enc_lens_b * T')``
    is exactly ``T'_b``: an item's encoding, pooling and decoder masks are those of the item alone (equal within
    float rounding at any precision), whatever shares its batch. Encoding the padded batch at once instead rounds
    each item's valid frame count from the padded length (``round(lens_b * T')``), which moves the normalisation,
    the pooled mean and the attention mask by a frame."""
    n = wavs.shape[0]
    abs_lens = torch.round(lens.float() * wavs.shape[1]).long().clamp(min=1).tolist()
    groups: dict[int, list[int]] = {}
    for b, length in enumerate(abs_lens):
        groups.setdefault(length, []).append(b)
    if len(groups) == 1 and abs_lens[0] == wavs.shape[1]:  # nothing padded
        enc = model.encode(wavs, torch.ones(n, device=wavs.device))
        return enc, torch.ones(n, device=enc.device)
    parts: dict[int, torch.Tensor] = {}
    for length, idx in groups.items():
        sel = torch.tensor(idx, device=wavs.device)
        enc_g = model.encode(wavs.index_select(0, sel)[:, :length], torch.ones(len(idx), device=wavs.device))
        for k, b in enumerate(idx):
            parts[b] = enc_g[k]
    t_max = max(p.shape[0] for p in parts.values())
    first = parts[0]
    enc = first.new_zeros(n, t_max, first.shape[-1])
    for b, p in parts.items():
        enc[b, : p.shape[0]] = p
    enc_lens = torch.tensor([parts[b].shape[0] / t_max for b in range(n)], device=enc.device)
    return enc, enc_lens


def decode(
    model, enc: torch.Tensor, lens: torch.Tensor, beam_size: int, max_len: int, length_penalty: float | None = None
) -> list[list[int]]:
    """Best hypothesis per item (token lists without bos/eos): beam search, or greedy when ``beam_size`` is 1.
    ``length_penalty`` (alpha): the SLU authors' beam score, sum_t log p_t / ((5 + t) / 6)^alpha (None: the running
    sum divided by the length)."""
    if beam_size <= 1:
        return greedy_search(model, enc, lens, max_len=max_len)
    hyps = beam_search(model, enc, lens, beam_size=beam_size, max_len=max_len, length_penalty=length_penalty)
    return [h[0].tokens for h in hyps]


@torch.no_grad()
def decode_dataset(
    model,
    dataset,
    beam_size: int = 1,
    batch_size: int = 16,
    max_len: int = 100,
    device: str = "cpu",
    precision: str | torch.dtype | None = None,
    progress: bool = True,
    desc: str = "decode",
    on_batch: Callable[[int], None] | None = None,
    shard: bool = True,
    length_penalty: float | None = None,
    unpadded: bool = False,
) -> dict[str, list[int]]:
    """{item ID: best hypothesis token list} over ``dataset`` (see the module docstring). The model is put in
    eval mode for the call; ``on_batch(k)`` is called after the k-th batch this process decodes (1-based). With
    ``unpadded`` every item is encoded at its own length (:func:`encode_unpadded`): its hypothesis does not depend
    on the batch it is in (the captioning recipe; the SLU recipe keeps its batched encoder for its results)."""
    rank, world = rank_and_world() if shard else (0, 1)
    was_training = model.training
    model.eval()
    # this process's batches only (every world-th, in order): the others' audio is never loaded here
    n = len(dataset)
    starts = range(rank * batch_size, n, world * batch_size)
    loader = make_dataloader(dataset, batch_sampler=[list(range(i, min(i + batch_size, n))) for i in starts])
    out: dict[str, list[int]] = {}
    try:
        k = 0
        bar = tqdm(loader, desc=desc, disable=not progress or rank != 0, dynamic_ncols=True)
        for batch in bar:
            batch = batch.to(device)
            wavs, lens = batch.sig
            with autocast(device, precision):
                enc, enc_lens = encode_unpadded(model, wavs, lens) if unpadded else (model.encode(wavs, lens), lens)
                hyps = decode(model, enc, enc_lens, beam_size, max_len, length_penalty)
            for item_id, h in zip(batch.id, hyps):
                out[item_id] = [int(t) for t in h]
            k += 1
            if on_batch is not None:
                on_batch(k)
    finally:
        model.train(was_training)
    if world > 1:
        parts: list[Any] = [None] * world
        torch.distributed.all_gather_object(parts, out)
        out = {i: h for part in parts for i, h in part.items()}
    return out


@torch.no_grad()
def pooled_features(
    model, dataset, batch_size: int = 16, device: str = "cpu", precision: str | torch.dtype | None = None
) -> torch.Tensor:
    """Time-pooled encoder outputs [N, D] (masked mean over valid frames) of every item, in dataset order (the
    herding features)."""
    was_training = model.training
    model.eval()
    feats = []
    try:
        for batch in make_dataloader(dataset, batch_size=batch_size, shuffle=False):
            batch = batch.to(device)
            wavs, lens = batch.sig
            with autocast(device, precision):
                feats.append(masked_mean(model.encode(wavs, lens), lens).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def teacher_target_fn(
    teacher,
    beam_size: int,
    max_len: int,
    device: str,
    precision: str | torch.dtype | None,
    hyps: bool,
    emb: bool,
    length_penalty: float | None = None,
) -> Callable[[Any], tuple[list[list[int]] | None, torch.Tensor | None]]:
    """``compute(batch) -> (hypotheses, pooled embeddings [B, D])`` for :meth:`TeacherTargets.ensure`: the teacher
    run as it is evaluated (same decoding, same precision). Every item is encoded at its own length
    (:func:`encode_unpadded`), so an item's targets do not depend on the items that share its batch (equal within
    float rounding to the item decoded alone)."""

    def compute(batch):
        batch = batch.to(device)
        wavs, lens = batch.sig
        with autocast(device, precision):
            enc, enc_lens = teacher.run(lambda m: encode_unpadded(m, wavs, lens))
            out_hyps = (
                teacher.run(lambda m: decode(m, enc, enc_lens, beam_size, max_len, length_penalty)) if hyps else None
            )
        out_emb = masked_mean(enc.float(), enc_lens) if emb else None
        return out_hyps, out_emb

    return compute
