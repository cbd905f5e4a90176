"""Real SLURP language end to end on a CPU: SLURP-TTS of a few scenarios, then the class-incremental recipe on it.

    PYTHONPATH=. python benchmarks/slurp_tts.py --slurp DIR_WITH_devel.jsonl_AND_test.jsonl --out results/slurp_tts
        [--scenarios calendar email general play qa social] [--rows finetune seq_kd] [--epochs 8] [--jobs 2]
        [--threads N] [-- overrides]

Real SLURP sentences (the annotations of SLURP's devel and test sets, e.g. ../shared/slurp) are split by slurp_id
into train / devel / test (70 / 10 / 20%), spoken by espeak-ng (``slukd synth slu --from_slurp_jsonl``, the demo
tier's single voice), and the recipe runs the given rows on two tasks (the first half of the scenarios, then the
second half). It prints the report. This measures what a small from-scratch model learns of real SLURP language on
this machine; the paper's setting (a pretrained encoder on real SLURP audio) needs a GPU (``--base
base_paper.yaml``). The split files and the corpus are written under ``--out`` (never next to the SLURP files).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def split_slurp(files: list[Path], scenarios: set[str], dest: Path) -> dict[str, int]:
    """Write ``dest/{train,devel,test}.jsonl`` from SLURP jsonl ``files`` (only ``scenarios``), split by
    crc32(slurp_id) % 10: 0-6 train, 7 devel, 8-9 test."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {"train": [], "devel": [], "test": []}
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            if d["scenario"] not in scenarios:
                continue
            h = zlib.crc32(str(d["slurp_id"]).encode()) % 10
            out["train" if h < 7 else "devel" if h == 7 else "test"].append(line)
    for split, lines in out.items():
        (dest / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {k: len(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from slukd.utils.run import split_passthrough

    argv, extra = split_passthrough(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slurp", required=True, help="folder with SLURP's devel.jsonl and test.jsonl")
    p.add_argument("--out", default="results/slurp_tts")
    p.add_argument("--scenarios", nargs="+", default=["calendar", "email", "general", "play", "qa", "social"])
    p.add_argument("--rows", nargs="+", default=["finetune", "seq_kd"])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / jobs)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    src = [Path(args.slurp) / f"{s}.jsonl" for s in ("devel", "test")]
    counts = split_slurp(src, set(args.scenarios), out / "jsonl")
    print(f"sentences: {counts}")
    corpus = out / "corpus"
    subprocess.run([sys.executable, "-m", "slukd.cli", "synth", "slu", "--out", str(corpus), "--tier", "demo",
                    "--from_slurp_jsonl", *[str(out / "jsonl" / f"{s}.jsonl") for s in ("train", "devel", "test")],
                    "--noprogressbar"], check=True)  # fmt: skip
    half = len(args.scenarios) // 2
    order = out / "order.txt"
    order.write_text(" ".join(args.scenarios[:half]) + "\n" + " ".join(args.scenarios[half:]) + "\n")
    sets = ["corpus=slurp", f"data_folder={corpus}", f"order={order}", f"number_of_epochs={args.epochs}",
            f"later_task_epochs={max(1, args.epochs // 2)}", f"first_task_cache={out / 'first_task_cache'}",
            "vocab_size=600", "memory_fraction=0.05"]  # fmt: skip
    cmd = [sys.executable, "-m", "slukd.cli", "sweep", "slu", "--rows", *args.rows, "--splits", "slurp3", "--jobs",
           str(args.jobs), *(["--threads", str(args.threads)] if args.threads else []), "--out", str(out / "runs"),
           "--set", *sets, "--", "--noprogressbar", *extra]  # fmt: skip
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
