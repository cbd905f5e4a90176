"""Manifest preparation speed: SLURP test metadata (13,078 recordings, no audio) and a corpus with audio.

    python benchmarks/prepare_speed.py [--slurp ../shared/slurp] [--audio-corpus data/slu_demo]

Metadata-only prepare (``audio_check=False``) parses every jsonl line, rebuilds entities/targets and writes the
CSV; the target is under 30 s for all 13,078 test recordings. With ``--audio-corpus`` it also times a prepare that
reads every FLAC header (soundfile.info) of a SLURP-layout corpus.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slukd.data.slurp import prepare_slurp_with_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slurp", default=str(REPO.parent / "shared" / "slurp"))
    ap.add_argument("--audio_corpus", "--audio-corpus", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        best = None
        for k in range(a.repeats):
            t = time.perf_counter()
            _, rep = prepare_slurp_with_report(a.slurp, Path(tmp) / f"m{k}", splits=("test",), audio_check=False)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        print(
            f"SLURP test metadata: {rep.rows['test']} recordings of {rep.sentences['test']} sentences, "
            f"best of {a.repeats}: {best:.2f} s ({rep.rows['test'] / best:.0f} recordings/s; target < 30 s)"
        )
        if a.audio_corpus:
            t = time.perf_counter()
            _, rep = prepare_slurp_with_report(
                a.audio_corpus, Path(tmp) / "audio", splits=("train", "devel", "test"), reuse=False
            )
            dt = time.perf_counter() - t
            n = sum(rep.rows.values())
            print(f"{a.audio_corpus} with FLAC headers: {n} recordings in {dt:.2f} s ({n / dt:.0f} recordings/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
