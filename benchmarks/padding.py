"""Padding in training batches: frames computed / frames of real audio, random vs bucketed batches.

    PYTHONPATH=. python benchmarks/padding.py MANIFEST.csv [--batch_size 8] [--epochs 3]

MANIFEST is any manifest the recipes write (a ``duration`` column), e.g. ``results/demo/joint/seed0/manifests/
train.csv``. A padded batch costs ``batch x longest item``; the ratio to the items' own lengths is the share of the
encoder's work spent on padding. Printed for SpeechBrain's random sampler and for slukd's bucketed random batches
(``batching: bucketed``), averaged over epochs; both see every item once per epoch.
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch

from slukd.train.sampling import BucketedRandomSampler


def waste(durations: list[float], batches: list[list[int]]) -> float:
    """Σ_batches |b| · max_{i∈b} d_i / Σ_i d_i."""
    return sum(len(b) * max(durations[i] for i in b) for b in batches) / sum(durations)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    with open(args.manifest, newline="", encoding="utf-8") as f:
        durations = [float(r["duration"]) for r in csv.DictReader(f)]
    rnd, buck = [], []
    for epoch in range(args.epochs):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(len(durations), generator=g).tolist()
        rnd.append(waste(durations, [perm[k : k + args.batch_size] for k in range(0, len(perm), args.batch_size)]))
        s = BucketedRandomSampler(durations, args.batch_size, seed=0)
        s.set_epoch(epoch)
        buck.append(waste(durations, s.batches()))
    r, b = sum(rnd) / len(rnd), sum(buck) / len(buck)
    print(f"{len(durations)} items, batch {args.batch_size}: frames computed / real frames")
    print(f"  random batches    {r:.3f}  ({100 * (1 - 1 / r):.1f}% of the work is padding)")
    print(f"  bucketed batches  {b:.3f}  ({100 * (1 - 1 / b):.1f}% of the work is padding)")
    print(f"  ratio random / bucketed: {r / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
