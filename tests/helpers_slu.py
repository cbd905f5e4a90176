"""Shared helpers of the SLU recipe tests: a tiny SLURP-layout tone corpus and tiny command lines.

The corpus has 4 scenarios (one intent each); every recording is a 0.4 s tone whose frequency identifies the
scenario, plus a little seeded noise, so a 32-dim model learns it in a few epochs on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
HP = REPO / "hparams" / "slurp_incremental"
RECIPE = REPO / "recipes" / "slurp_incremental.py"


def recipe_module(name: str):
    """The recipe ``recipes/<name>.py`` imported as a module (its ``main(argv)`` runs one row in-process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    """``recipes/slurp_incremental.py`` in-process (errors propagate, as the tests expect)."""
    return recipe_module("slurp_incremental").main(list(argv))


SENTENCES = {
    ("email", "sendemail"): ("send an email to {x}", "person", ["bob", "anna", "tom"]),
    ("qa", "factoid"): ("who is {x}", "person", ["bob", "anna", "tom"]),
    ("alarm", "set"): ("wake me up at {x}", "time", ["six", "seven", "noon"]),
    ("weather", "query"): ("is it raining in {x}", "place_name", ["paris", "rome", "oslo"]),
}
FREQ = {"email": 300.0, "qa": 600.0, "alarm": 900.0, "weather": 1200.0}

#: the smallest model and decoding settings (each recipe run takes a few seconds on one CPU thread)
TINY = [
    "--corpus=slurp",
    "--number_of_epochs=1",
    "--batch_size=4",
    "--eval_batch_size=8",
    "--d_model=32",
    "--nhead=2",
    "--num_encoder_layers=1",
    "--num_decoder_layers=1",
    "--d_ffn=64",
    "--n_mels=20",
    "--vocab_size=60",
    "--max_decode_len=12",
    "--test_beam_size=2",
    "--pseudo_beam_size=2",
    "--memory_per_class=2",
    "--memory_fraction=null",
    "--precision=fp32",
    "--eval_precision=fp32",
    "--noprogressbar",
    "--first_task_cache=null",
]

#: result fields that measure time or memory (differ between two otherwise identical runs)
VOLATILE = {"epoch_s", "train_s", "eval_s", "wall_s", "pseudo_s", "targets_s", "peak_rss_mb", "best_checkpoint"}


def make_corpus(root: Path, per_split: dict[str, int], seconds: float = 0.4) -> Path:
    """SLURP layout: dataset/slurp/{train,devel,test}.jsonl + slurp_real/*.flac (a tone per scenario + noise)."""
    rng = np.random.default_rng(0)
    (root / "dataset" / "slurp").mkdir(parents=True)
    (root / "slurp_real").mkdir()
    sid = 0
    for split, n in per_split.items():
        lines = []
        for (scen, act), (tmpl, etype, fillers) in SENTENCES.items():
            for k in range(n):
                filler = fillers[k % len(fillers)]
                words = tmpl.format(x=filler).split()
                t = np.arange(int(16000 * seconds)) / 16000
                wav = 0.3 * np.sin(2 * np.pi * FREQ[scen] * t) + 0.01 * rng.standard_normal(t.shape)
                name = f"audio-{sid}.flac"
                sf.write(root / "slurp_real" / name, wav.astype(np.float32), 16000)
                lines.append(
                    {
                        "slurp_id": sid,
                        "sentence": " ".join(words),
                        "scenario": scen,
                        "action": act,
                        "tokens": [{"surface": w} for w in words],
                        "entities": [{"type": etype, "span": [len(words) - 1]}],
                        "recordings": [{"file": name}],
                    }
                )
                sid += 1
        (root / "dataset" / "slurp" / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def write_order(folder: Path) -> Path:
    """A two-task order file: (email, qa) then (alarm, weather)."""
    p = folder / "order.txt"
    p.write_text("email qa\nalarm weather\n", encoding="utf-8")
    return p


def tiny_argv(corpus: Path, out: Path, order: Path, row: str = "seq_kd", *extra: str) -> list[str]:
    """Recipe arguments of the tiny configuration (row file first; ``extra`` ``--key=value`` options replace
    the tiny ones of the same key)."""
    keys = {e.split("=")[0] for e in extra}
    tiny = [a for a in TINY if a.split("=")[0] not in keys]
    return [str(HP / f"{row}.yaml"), f"--data_folder={corpus}", f"--output_folder={out}", f"--order={order}", *tiny,
            *extra]  # fmt: skip


def tone_argv(corpus: Path, out: Path, order: Path, row: str, epochs: int) -> list[str]:
    """Tiny configuration trained long enough to learn the tones (``epochs`` per task)."""
    args = [a for a in TINY if not a.startswith(("--number_of_epochs", "--noprogressbar"))]
    return [str(HP / f"{row}.yaml"), f"--data_folder={corpus}", f"--output_folder={out}", f"--order={order}", *args,
            f"--number_of_epochs={epochs}", "--lr=0.003", "--warmup_steps=20", "--noprogressbar"]  # fmt: skip


def comparable_results(run: Path) -> dict[str, object]:
    """Everything a run's results say, minus time and memory: step JSONs, predictions, report.csv columns,
    matrices and the memory files. Two runs that should be equal compare equal through this."""
    out: dict[str, object] = {}
    for p in sorted((run / "results").glob("step*.json")):
        d = json.loads(p.read_text(encoding="utf-8"))
        out[f"results/{p.name}"] = {k: v for k, v in d.items() if k not in VOLATILE}
    for p in sorted(run.glob("task*/predictions.jsonl")):
        out[str(p.relative_to(run))] = p.read_text(encoding="utf-8")
    for p in sorted(run.glob("matrix_*.csv")) + sorted(run.glob("memory_after_task*.json")):
        out[p.name] = p.read_text(encoding="utf-8")
    rep = run / "report.csv"
    if rep.is_file():
        header, values = rep.read_text(encoding="utf-8").splitlines()[:2]
        keep = {"wall_s", "peak_rss_mb", "first_task_reused"}  # time, memory and provenance
        out["report.csv"] = {k: v for k, v in zip(header.split(","), values.split(",")) if k not in keep}
    return out
