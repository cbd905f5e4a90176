"""The papers' configurations at their real size: random weights of the real architectures, every task, and the cost
of each phase, so a GPU run can be planned.

    PYTHONPATH=. python benchmarks/paper_size.py --out results/paper_size                       # CPU proof (--debug)
    PYTHONPATH=. python benchmarks/paper_size.py --out DIR --device cuda --full_steps           # GPU: real batches
        [--encoders wav2vec2 hubert wavlm] [--splits slurp3 slurp6] [--rows seq_kd] [--no_captioning]
        [--phase_batch 32] [--mean_seconds 2.9] [--worst_seconds 7.0] [--skip_runs] [--skip_phases]

1. Checkpoints (``--ckpt``, default ``OUT/ckpt``; written once): random weights with the real configurations,
   saved with ``save_pretrained`` as a downloaded checkpoint is: wav2vec2-base (transformers' Wav2Vec2Config
   defaults, the base / base-960h layout), HuBERT-base, WavLM-base-plus (their configs' defaults are the base
   models), CLAP's HTSAT-base audio tower and BART-base. Nothing is downloaded.
2. Runs: the SLU recipe on ``hparams/slurp_incremental/base_paper.yaml`` (the authors' configuration: d 768, 8 heads,
   6 layers, FFN 3072, BPE, batch 32, beam 20 with the length penalty, 7 s drop) over every task of SLURP-3 and
   SLURP-6 on a generated tone corpus of the 18 SLURP scenarios (one clip of each training split is 8 s long, so
   the 7 s drop is exercised and counted), for each encoder; the captioning teacher (HTSAT + BART-base) and the
   paper's best student (EfficientNet-B2, seq-KD + contrastive KD + audio-only clips) on the built-in tiny scenes
   corpus with ``hparams/captioning_kd/base_paper.yaml``. On the CPU under SpeechBrain's ``--debug`` (2 batches
   and 2 epochs per task; the output folders get ``-debug``); with ``--full_steps`` the configured epochs are cut
   to one per task (a slice) and batches are full.
3. Phases: each in a fresh subprocess, on real-size models, a batch of ``--phase_batch`` clips of
   ``--mean_seconds``: training step (forward, backward, AdamW step), teacher targets (beam search as configured),
   herding features (pooled encoder outputs), evaluation (test decoding, and the per-epoch greedy validation);
   memory at ``--worst_seconds`` (the longest clip kept). Prints seconds per step and peak memory (RSS on the CPU,
   ``torch.cuda.max_memory_allocated`` on a GPU), then the projected hours of each paper table from the stated
   corpus sizes (``SLURP_SIZES``; ``--slurp DIR`` counts the real recordings of DIR's train/devel/test jsonl).

Writes ``OUT/paper_size.json`` and ``OUT/paper_size.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from slukd.continual.scenario import SLURP_SCENARIOS  # noqa: E402

#: transformers class names of the SSL encoders: (config, model, feature extractor's do_normalize as published)
ENCODERS = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", True),  # facebook/wav2vec2-base-960h
    "hubert": ("HubertConfig", "HubertModel", False),  # facebook/hubert-base-ls960
    "wavlm": ("WavLMConfig", "WavLMModel", False),  # microsoft/wavlm-base-plus
}
#: the SLU authors' epochs per task (main_SLURP_example.py) and their batch size
EPOCHS = [40, 25, 15, 15, 15, 15]
BATCH = 32
#: stated corpus sizes (recordings) when no SLURP folder is given: SLURP's published counts (train real 50,628 +
#: synthetic 69,253; devel 8,690; test 13,078) minus an assumed 3% over 7 s; the tasks' shares come from the test set
SLURP_SIZES = {"train": int(0.97 * (50628 + 69253)), "devel": int(0.97 * 8690), "test": int(0.97 * 13078)}
#: rows of each paper table (the first task is shared by the continual rows of a seed: one first task + the rest)
TABLE_ROWS = {
    "slurp3": ["finetune", "rehearsal_random", "rehearsal_herding", "audio_kd", "tok_kd", "seq_kd"],
    "slurp6": ["finetune", "rehearsal_random", "rehearsal_herding", "audio_kd", "tok_kd", "seq_kd", "audio_seq_kd"],
}
#: Clotho v2 (the captioning paper's data): development 3,839 clips x 5 captions, validation 1,045, evaluation 1,045
CLOTHO = {"train_clips": 3839, "captions_per_clip": 5, "valid": 1045, "test": 1045, "mean_seconds": 22.0}


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoints(folder: Path, encoders: list[str]) -> dict[str, Path]:
    """Random real-size checkpoints under ``folder`` (one sub-folder each; reused when complete)."""
    import torch
    import transformers

    from slukd.models.paper_caption import BART_BASE, HTSAT_BASE

    out: dict[str, Path] = {}
    for kind in encoders:
        cfg_name, model_name, normalize = ENCODERS[kind]
        dest = folder / kind
        if not (dest / "preprocessor_config.json").is_file():
            torch.manual_seed(0)
            model = getattr(transformers, model_name)(getattr(transformers, cfg_name)())
            model.save_pretrained(str(dest))
            fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=not normalize)
            fe.save_pretrained(str(dest))
        out[kind] = dest
    dest = folder / "clap_htsat"
    if not (dest / "config.json").is_file():
        torch.manual_seed(0)
        cfg = transformers.ClapAudioConfig(**HTSAT_BASE)
        transformers.ClapAudioModel(cfg).save_pretrained(str(dest))
    out["htsat"] = dest
    dest = folder / "bart_base"
    if not (dest / "config.json").is_file():
        torch.manual_seed(0)
        ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}
        transformers.BartModel(transformers.BartConfig(**BART_BASE, **ids)).save_pretrained(str(dest))
    out["bart"] = dest
    return out


# ---------------------------------------------------------------------------------------------- corpus
def make_scenario_corpus(root: Path, per_split: dict[str, int], seconds: float, long_seconds: float = 8.0) -> Path:
    """SLURP layout with the 18 scenarios (intent ``<scenario>_query``, one entity): tones whose frequency names the
    scenario plus noise, ``seconds`` long; the first training clip is ``long_seconds`` (dropped by a 7 s limit)."""
    import soundfile as sf

    if (root / "dataset" / "slurp" / "test.jsonl").is_file():
        return root
    rng = np.random.default_rng(0)
    (root / "dataset" / "slurp").mkdir(parents=True, exist_ok=True)
    (root / "slurp_real").mkdir(exist_ok=True)
    sid = 0
    for split, n in per_split.items():
        lines = []
        for si, scen in enumerate(SLURP_SCENARIOS):
            for k in range(n):
                dur = long_seconds if (split == "train" and sid == 0) else seconds
                t = np.arange(int(16000 * dur)) / 16000
                wav = 0.3 * np.sin(2 * np.pi * (200.0 + 60.0 * si) * t) + 0.01 * rng.standard_normal(t.shape)
                name = f"audio-{sid}.flac"
                sf.write(root / "slurp_real" / name, wav.astype(np.float32), 16000)
                words = ["tell", "me", "about", scen, ["today", "tomorrow", "tonight"][k % 3]]
                lines.append({"slurp_id": sid, "sentence": " ".join(words), "scenario": scen, "action": "query",
                              "tokens": [{"surface": w} for w in words], "entities": [{"type": "date", "span": [4]}],
                              "recordings": [{"file": name}]})  # fmt: skip
                sid += 1
        (root / "dataset" / "slurp" / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


# ---------------------------------------------------------------------------------------------- recipe runs
def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` (a recipe) in a subprocess; wall seconds, exit code and the child's peak RSS (MiB)."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "log": str(log)}


def run_slu(out: Path, ckpt: Path, corpus: Path, split: str, row: str, device: str, full_steps: bool) -> dict:
    """One SLU row over every task of ``split`` on the paper base; returns its step results and timings."""
    run = out / "runs" / f"slu_{split}_{ckpt.name}_{row}"
    cmd = [sys.executable, str(REPO / "recipes" / "slurp_incremental.py"), str(REPO / "hparams" / "slurp_incremental"
           / f"{row}.yaml"), "--base=base_paper.yaml", f"--data_folder={corpus}", f"--output_folder={run}",
           f"--pretrained_folder={ckpt}", f"--split={split}", "--use_synthetic=false", "--first_task_cache=null",
           "--noprogressbar", f"--device={device}"]  # fmt: skip
    if full_steps:
        cmd += ["--number_of_epochs=1", "--later_task_epochs=1"]
    else:
        cmd += ["--debug"]
        run = Path(str(run) + "-debug")
    res = _run(cmd, out / f"slu_{split}_{ckpt.name}_{row}.log")
    steps = [json.loads(p.read_text()) for p in sorted((run / "results").glob("step*.json"))]
    rep = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").is_file() else {}
    res.update(run=str(run), n_tasks=len(steps), tasks=[
        {"train_s": round(s["train_s"], 1), "eval_s": round(s["eval_s"], 1), "epoch_s": s.get("epoch_s"),
         "targets_s": s.get("targets_s"), "peak_rss_mb": round(s["peak_rss_mb"]), "seen_n": s["seen"]["n"]}
        for s in steps])  # fmt: skip
    res["too_long_dropped"] = _too_long(steps)
    res["settings"] = {k: rep.get("hparams", {}).get(k) for k in ("d_model", "batch_size")} if rep else {}
    return res


def _too_long(steps: list[dict]) -> int | None:
    """Recordings dropped by the duration limit: every ``too_long`` count in the data report of the step results."""

    def count(node) -> int:
        if isinstance(node, dict):
            return sum(v if k == "too_long" and isinstance(v, int) else count(v) for k, v in node.items())
        return 0

    return count(steps[0].get("data") or {}) if steps else None


def run_captioning(out: Path, ckpts: dict[str, Path], device: str, full_steps: bool) -> dict:
    """The captioning teacher (HTSAT + BART-base) then the best student row, on the tiny scenes corpus."""
    hp = REPO / "hparams" / "captioning_kd"
    data, teacher = out / "scenes_tiny", out / "runs" / "cap_teacher"
    common = [f"--base={hp / 'base_paper.yaml'}", "--tier=tiny", f"--data_folder={data}", "--noprogressbar",
              f"--teacher_model.htsat_source={ckpts['htsat']}", f"--teacher_model.bart_source={ckpts['bart']}",
              f"--device={device}"]  # fmt: skip
    if full_steps:
        common += ["--number_of_epochs=1"]
    else:
        common += ["--debug"]
    suffix = "" if full_steps else "-debug"
    res = {}
    for name, row, extra in (("teacher", "teacher.yaml", []),
                             ("student", "student_seqkd_contrastive_audio.yaml", [f"--teacher_folder={teacher}"
                                                                                   f"{suffix}"])):  # fmt: skip
        folder = out / "runs" / f"cap_{name}"
        cmd = [sys.executable, str(REPO / "recipes" / "captioning_kd.py"), str(hp / row), *common,
               f"--output_folder={folder}", *extra]  # fmt: skip
        r = _run(cmd, out / f"cap_{name}.log")
        results = Path(str(folder) + suffix) / "results.json"
        r["results"] = json.loads(results.read_text()) if results.is_file() else None
        res[name] = r
    return res


# ---------------------------------------------------------------------------------------------- phases
def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, device: str, repeats: int) -> float:
    import torch

    fn()  # warm-up (allocations, lazy init)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def phase_main(args: argparse.Namespace) -> dict:
    """One phase on one real-size model in this process: {phase, s_per_step, peak_mb, batch, seconds}."""
    import torch

    from slukd.config import load_hparams
    from slukd.train.decode import autocast, decode, pooled_features  # noqa: F401

    torch.manual_seed(0)
    dev = args.device
    if args.model == "slu":
        hp, _ = load_hparams(REPO / "hparams" / "slurp_incremental" / "seq_kd.yaml",
                             f"base: base_paper.yaml\npretrained_folder: {args.ckpt}")  # fmt: skip
        model = hp["model"](vocab_size=hp["vocab_size"]).to(dev)
        beam, max_len, penalty = hp["test_beam_size"], hp["max_decode_len"], hp["length_penalty"]
        prec = hp["precision"]
    else:
        from slukd.models.paper_caption import paper_student, paper_teacher

        model = (paper_teacher(5000, htsat_source=args.ckpt_htsat, bart_source=args.ckpt_bart) if args.model ==
                 "cap_teacher" else paper_student(5000)).to(dev)  # fmt: skip
        beam, max_len, penalty, prec = 3, 22, None, "fp32"
    b, s = args.batch, int(16000 * args.seconds)
    wavs = torch.randn(b, s, device=dev) * 0.1
    lens = torch.ones(b, device=dev)
    tgt_len = 40 if args.model == "slu" else 22
    tokens = torch.randint(3, 900, (b, tgt_len), device=dev)
    bos = torch.cat([torch.ones(b, 1, dtype=torch.long, device=dev), tokens[:, :-1]], dim=1)
    if args.phase == "train":
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step():
            with autocast(dev, prec):
                enc = model.encode(wavs, lens)
                logits = model.decode(enc, lens, bos)
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec = _timed(step, dev, args.repeats)
    else:
        model.eval()
        with torch.no_grad():
            if args.phase == "herding":
                sec = _timed(lambda: model.encode(wavs, lens).mean(1), dev, args.repeats)
            else:
                k = 1 if args.phase == "valid_greedy" else beam
                sec = _timed(lambda: decode(model, model.encode(wavs, lens), lens, k, max_len, penalty), dev,
                             args.repeats)  # fmt: skip
    n_params = sum(p.numel() for p in model.parameters())
    return {"model": args.model, "phase": args.phase, "batch": b, "seconds": args.seconds, "s_per_step":
            round(sec, 3), "peak_mb": round(_peak_mb(dev)), "params_m": round(n_params / 1e6, 1),
            "device": dev, "threads": torch.get_num_threads()}  # fmt: skip


def run_phase(model: str, phase: str, batch: int, seconds: float, args, ckpts: dict[str, Path]) -> dict:
    """:func:`phase_main` in a fresh subprocess (its own peak memory)."""
    cmd = [sys.executable, __file__, "--_phase", phase, "--_model", model, "--phase_batch", str(batch),
           "--mean_seconds", str(seconds), "--device", args.device, "--repeats", str(args.repeats),
           "--_ckpt", str(ckpts.get(args.encoders[0], "")), "--_ckpt_htsat", str(ckpts["htsat"]),
           "--_ckpt_bart", str(ckpts["bart"])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"model": model, "phase": phase, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- projection
def slurp_sizes(slurp: Path | None) -> tuple[dict[str, int], dict[str, float]]:
    """Recordings per split (counted from ``slurp`` when given, else :data:`SLURP_SIZES`) and each scenario's share
    (from the test split of ``slurp`` or of ../shared/slurp when present, else uniform)."""
    sizes, shares = dict(SLURP_SIZES), {s: 1 / 18 for s in SLURP_SCENARIOS}
    src = slurp or REPO.parent / "shared" / "slurp"
    test = src / "test.jsonl"
    if test.is_file():
        count = {s: 0 for s in SLURP_SCENARIOS}
        for line in test.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            count[d["scenario"]] = count.get(d["scenario"], 0) + len(d.get("recordings", [])) or 1
        total = sum(count.values())
        shares = {s: c / total for s, c in count.items()}
    if slurp is not None:
        for split in ("train", "devel", "test"):
            p = slurp / f"{split}.jsonl"
            if p.is_file():
                sizes[split] = sum(len(json.loads(x).get("recordings", [])) for x in p.read_text().splitlines())
    return sizes, shares


def project(phases: dict[str, dict], sizes: dict[str, int], shares: dict[str, float]) -> dict[str, dict]:
    """GPU (or CPU) hours of one row and of each paper table from the per-batch phase costs.

    Per task t (scenarios S_t, memory M_t = 70 x scenarios seen before t): training steps epochs_t x ceil((N_t +
    M_t) / 32) with N_t = train x share(S_t); validation every epoch, greedy over the devel items seen so far;
    test after the task, beam 20 over the test items seen so far; teacher targets (seq-KD rows) over M_t; herding
    features over N_t. A table = one first task (shared) + the later tasks of each continual row + joint (one task
    of 40 epochs over everything)."""
    from slukd.continual.scenario import make_scenario

    per_item = {k: v["s_per_step"] / v["batch"] for k, v in phases.items() if "s_per_step" in v}
    out = {}
    for split in ("slurp3", "slurp6"):
        tasks = make_scenario(split, "fixed", 0).tasks
        first, later, seen = 0.0, 0.0, []
        for t, task in enumerate(tasks):
            share = sum(shares[s] for s in task)
            n_t, m_t = sizes["train"] * share, 70 * len(seen)
            seen += list(task)
            seen_share = sum(shares[s] for s in seen)
            steps = EPOCHS[t] * math.ceil((n_t + m_t) / BATCH)
            cost = steps * per_item["train"] * BATCH
            cost += EPOCHS[t] * sizes["devel"] * seen_share * per_item["valid_greedy"]
            cost += sizes["test"] * seen_share * per_item["test_beam"]
            cost += n_t * per_item["herding"]
            cost += m_t * per_item["test_beam"]  # seq-KD targets (the KD rows; an upper bound for the others)
            first, later = (first + cost, later) if t == 0 else (first, later + cost)
        joint = EPOCHS[0] * math.ceil(sizes["train"] / BATCH) * per_item["train"] * BATCH
        joint += EPOCHS[0] * sizes["devel"] * per_item["valid_greedy"] + sizes["test"] * per_item["test_beam"]
        rows = len(TABLE_ROWS[split])
        out[split] = {"row_hours": round((first + later) / 3600, 1), "first_task_hours": round(first / 3600, 1),
                      "table_hours_per_seed": round((first + rows * later + joint) / 3600, 1), "rows": rows + 1,
                      "joint_hours": round(joint / 3600, 1)}  # fmt: skip
    return out


def project_captioning(phases: dict[str, dict], epochs: int = 30) -> dict:
    """Hours of the captioning table (the teacher + every student row file) from the per-batch costs, on Clotho's
    sizes."""
    n_students = len(list((REPO / "hparams" / "captioning_kd").glob("student_*.yaml")))
    per = {k: v["s_per_step"] / v["batch"] for k, v in phases.items() if "s_per_step" in v}
    n = CLOTHO["train_clips"] * CLOTHO["captions_per_clip"]
    teacher = epochs * n * per.get("cap_teacher_train", 0) + CLOTHO["test"] * per.get("cap_teacher_beam", 0)
    targets = CLOTHO["train_clips"] * per.get("cap_teacher_beam", 0)
    student = epochs * n * per.get("cap_student_train", 0) + CLOTHO["test"] * per.get("cap_student_beam", 0)
    return {"teacher_hours": round(teacher / 3600, 2), "student_row_hours": round((student + targets) / 3600, 2),
            "table_hours_per_seed": round((teacher + n_students * student + targets) / 3600, 1),
            "rows": n_students + 1}  # fmt: skip


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/paper_size")
    p.add_argument("--ckpt", default=None, help="checkpoint folder (default OUT/ckpt)")
    p.add_argument("--encoders", nargs="+", default=["wav2vec2", "hubert", "wavlm"], choices=sorted(ENCODERS))
    p.add_argument("--splits", nargs="+", default=["slurp3", "slurp6"])
    p.add_argument("--rows", nargs="+", default=["seq_kd"])
    p.add_argument("--no_captioning", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full_steps", action="store_true", help="real batches, one epoch per task (GPU)")
    p.add_argument("--per_scenario", type=int, default=None, help="training clips per scenario (default 2; 64 "
                   "with --full_steps)")  # fmt: skip
    p.add_argument("--clip_seconds", type=float, default=1.0, help="corpus clip length")
    p.add_argument("--phase_batch", type=int, default=4)
    p.add_argument("--mean_seconds", type=float, default=2.9, help="assumed mean SLURP clip length")
    p.add_argument("--worst_seconds", type=float, default=7.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--slurp", type=Path, default=None, help="SLURP jsonl folder to count the real sizes")
    p.add_argument("--skip_runs", action="store_true")
    p.add_argument("--skip_phases", action="store_true")
    for hidden in ("--_phase", "--_model", "--_ckpt", "--_ckpt_htsat", "--_ckpt_bart"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._phase:
        args.phase, args.model, args.batch, args.seconds = args._phase, args._model, args.phase_batch, args.mean_seconds
        args.ckpt, args.ckpt_htsat, args.ckpt_bart = args._ckpt, args._ckpt_htsat, args._ckpt_bart
        print(json.dumps(phase_main(args)))
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpts = save_checkpoints(Path(args.ckpt) if args.ckpt else out / "ckpt", args.encoders)
    report: dict = {"device": args.device, "full_steps": args.full_steps, "runs": {}, "phases": {}}
    t_all = time.perf_counter()
    # phases first: short, and they give the projection even when a bounded run stops during the recipe runs
    if not args.skip_phases:
        m, w = args.mean_seconds, args.worst_seconds
        plan = [("train", "slu", "train", m), ("herding", "slu", "herding", m), ("valid_greedy", "slu", "valid_greedy",
                m), ("test_beam", "slu", "test_beam", m), ("train_worst", "slu", "train", w)]  # fmt: skip
        if not args.no_captioning:  # captioning clips: 10 s (AudioCaps) as the common length
            plan += [(f"{mod}_{ph}", mod, ph, 10.0) for mod in ("cap_teacher", "cap_student")
                     for ph in ("train", "test_beam")]  # fmt: skip
        for key, model, phase, sec in plan:
            r = run_phase(model, phase, args.phase_batch, sec, args, ckpts)
            report["phases"][key] = r
            print(f"phase {key}: {r}", flush=True)
        sizes, shares = slurp_sizes(args.slurp)
        ok = all("s_per_step" in report["phases"].get(k, {}) for k in ("train", "herding", "valid_greedy",
                                                                        "test_beam"))  # fmt: skip
        if ok:
            report["projection"] = {"sizes": sizes, "slu": project(report["phases"], sizes, shares)}
            if not args.no_captioning:
                report["projection"]["captioning"] = project_captioning(report["phases"])
        save(out, report)
    if not args.skip_runs:
        n = args.per_scenario or (64 if args.full_steps else 2)
        corpus = make_scenario_corpus(out / f"corpus_{n}", {"train": n, "devel": 1, "test": 1}, args.clip_seconds)
        for enc in args.encoders:
            for split in args.splits:
                for row in args.rows:
                    r = run_slu(out, ckpts[enc], corpus, split, row, args.device, args.full_steps)
                    report["runs"][f"slu/{enc}/{split}/{row}"] = r
                    save(out, report)
                    print(f"SLU {enc} {split} {row}: rc {r['rc']}, {r['n_tasks']} tasks, {r['wall_s']} s", flush=True)
        if not args.no_captioning:
            r = run_captioning(out, ckpts, args.device, args.full_steps)
            report["runs"]["captioning"] = r
            print(f"captioning: teacher rc {r['teacher']['rc']}, student rc {r['student']['rc']}", flush=True)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    save(out, report)
    print(markdown(report))
    failed = [k for k, r in report["runs"].items() if (r.get("rc") if "rc" in r else max(v["rc"] for v in
              r.values())) != 0]  # fmt: skip
    return 1 if failed else 0


def save(out: Path, report: dict) -> None:
    """Write ``paper_size.json`` and ``paper_size.md`` (after each stage: a cut run keeps what it measured)."""
    (out / "paper_size.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "paper_size.md").write_text(markdown(report), encoding="utf-8")


def markdown(report: dict) -> str:
    """The report as markdown tables: runs, phases, projection."""
    lines = [f"device: {report['device']}; full steps: {report['full_steps']}", "", "| run | exit | tasks | wall (s) | "
             "train s per task | eval s per task | peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, r in report["runs"].items():
        if key == "captioning":
            for name, c in r.items():
                lines.append(f"| captioning {name} | {c['rc']} | 1 | {c['wall_s']} | | | |")
            continue
        t = r.get("tasks", [])
        lines.append(
            f"| {key} | {r['rc']} | {r['n_tasks']} | {r['wall_s']} | {', '.join(str(x['train_s']) for x in t)}"
            f" | {', '.join(str(x['eval_s']) for x in t)} | {max([x['peak_rss_mb'] for x in t] or [0])} |"
        )
    lines += ["", "| phase | batch x seconds | s per step | peak memory (MiB) | params (M) |", "|---|---|---|---|---|"]
    for key, r in report["phases"].items():
        if "error" in r:
            lines.append(f"| {key} | error: {r['error']} | | | |")
        else:
            lines.append(
                f"| {key} | {r['batch']} x {r['seconds']} | {r['s_per_step']} | {r['peak_mb']} | {r['params_m']} |"
            )
    proj = report.get("projection")
    if proj:
        lines += [
            "",
            f"projection on {report['device']} (sizes {proj['sizes']}):",
            "",
            "| table | hours per row | first task | joint | rows | hours per seed |",
            "|---|---|---|---|---|---|",
        ]
        for split, v in proj["slu"].items():
            lines.append(
                f"| {split} | {v['row_hours']} | {v['first_task_hours']} | {v['joint_hours']} | {v['rows']} | "
                f"{v['table_hours_per_seed']} |"
            )
        if "captioning" in proj:
            c = proj["captioning"]
            lines.append(
                f"| captioning | {c['student_row_hours']} (student) | {c['teacher_hours']} (teacher) | | {c['rows']} |"
                f" {c['table_hours_per_seed']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
