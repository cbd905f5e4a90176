"""Speech synthesis speed: seconds of 16 kHz speech produced per CPU-second (and per wall second).

Speaks the first ``--n`` demo-tier training sentences with each available espeak-ng back end, in this process
(one worker), including resampling to 16 kHz; CPU time counts this process and its children (the binary back end
runs one ``espeak-ng`` process per utterance). FLAC writing is timed separately.

    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py --n 200
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import soundfile as sf  # noqa: E402

from slukd.data import tts  # noqa: E402
from slukd.data.synth_slu import make_sentences  # noqa: E402


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of sentences")
    a = ap.parse_args(argv)
    texts = [r["sentence"] for r in make_sentences("demo", 0)["train"][: a.n]]
    backends = []
    if tts.available_backend() == "binary":
        backends.append("binary")
    try:
        tts.speak("hello", backend="library")
        backends.append("library")
    except Exception as err:  # no espeakng-loader / libespeak-ng
        print(f"library back end unavailable: {err}")
    head = ("backend", "utts", "speech s", "cpu s", "wall s", "speech/cpu-s", "speech/wall-s")
    print("{:>8} {:>5} {:>9} {:>7} {:>7} {:>12} {:>13}".format(*head))
    for be in backends:
        c0, w0, total = cpu_seconds(), time.perf_counter(), 0.0
        audio = []
        for i, t in enumerate(texts):
            x = tts.speak(t, voice="en-us", rate=160 + i % 30, backend=be)
            audio.append(x)
            total += x.shape[0] / 16000
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
        print(f"{be:>8} {len(texts):5d} {total:9.1f} {cpu:7.2f} {wall:7.2f} {total / cpu:12.0f} {total / wall:13.0f}")
    c0 = cpu_seconds()
    for x in audio:
        sf.write(io.BytesIO(), x, 16000, format="FLAC", subtype="PCM_16")
    print(f"FLAC encoding: {total / (cpu_seconds() - c0):.0f} s of speech per CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
