"""Training-batch order of both recipes.

``batching: random`` draws a seeded permutation per epoch (SpeechBrain's ReproducibleRandomSampler). With items of
different lengths, a random batch pads every item to the longest one: on the demo SLU corpus a model computes 1.34x
the frames the audio holds, a quarter of its work on padding (``benchmarks/padding.py``; bucketed: 1.01x).
``batching: bucketed`` (:class:`BucketedRandomSampler`) keeps the batches random but of similar lengths: the epoch's
permutation is cut into chunks of ``bucket_batches`` batches, each chunk is sorted by duration and cut into batches,
and the batches are shuffled. It is a batch sampler (it yields whole batches: pass it as the DataLoader's
``batch_sampler``). Under DDP each process takes every ``world``-th batch of the same epoch order (the list padded by
repeating batches so that every process runs the same number of steps). Every item is still seen once per epoch,
batches still mix items from the whole set, and the order is a function of (seed, epoch)
only, so a resumed epoch repeats an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from slukd.utils.distributed import rank_and_world

__all__ = ["BucketedRandomSampler", "train_loader"]


class BucketedRandomSampler(Sampler[list[int]]):
    """The batches of one epoch in bucketed random order (see the module docstring). ``durations[i]`` is item i's
    length; ``set_epoch(e)`` selects the epoch."""

    def __init__(self, durations: Sequence[float], batch_size: int, seed: int = 0, bucket_batches: int = 50):
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size and bucket_batches must be >= 1, got {batch_size}, {bucket_batches}")
        self.durations = [float(d) for d in durations]
        self.batch_size, self.seed, self.bucket_batches = int(batch_size), int(seed), int(bucket_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """The epoch's batches (lists of indices), in training order."""
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.durations), generator=g).tolist()
        chunk = self.batch_size * self.bucket_batches
        batches: list[list[int]] = []
        for start in range(0, len(perm), chunk):
            part = sorted(perm[start : start + chunk], key=lambda i: (self.durations[i], i))
            batches += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in order]
        rank, world = rank_and_world()
        if world > 1:
            n = -(-len(batches) // world)
            batches = (batches * (1 + n * world // max(1, len(batches))))[: n * world][rank::world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        """Batches per epoch (of this process)."""
        chunk = self.batch_size * self.bucket_batches
        full, rest = divmod(len(self.durations), chunk)
        total = full * self.bucket_batches + (rest + self.batch_size - 1) // self.batch_size
        return -(-total // rank_and_world()[1])


def train_loader(kind: str, dataset, durations: Sequence[float], batch_size: int, seed: int,
                 num_workers: int = 0) -> tuple[object, dict, object]:  # fmt: skip
    """(training set or DataLoader, loader kwargs for ``Brain.fit``, sampler) for ``batching`` ``random`` or
    ``bucketed``; both are seeded and the Brain calls the sampler's ``set_epoch`` every epoch. ``random`` leaves the
    DataLoader (and its DDP split) to SpeechBrain; ``bucketed`` returns a ready DataLoader (split across
    processes by the sampler itself)."""
    if kind == "bucketed":
        from speechbrain.dataio.dataloader import make_dataloader

        sampler = BucketedRandomSampler(durations, batch_size, seed=seed)
        return make_dataloader(dataset, batch_sampler=sampler, num_workers=num_workers), {}, sampler
    if kind == "random":
        from speechbrain.dataio.sampler import ReproducibleRandomSampler

        sampler = ReproducibleRandomSampler(dataset, seed=seed)
        return dataset, {"batch_size": batch_size, "sampler": sampler, "num_workers": num_workers}, sampler
    raise ValueError(f"hparam batching must be 'random' or 'bucketed', got {kind!r}")
