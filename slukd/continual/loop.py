"""The class-incremental task loop of the SLURP recipe: a resumable state machine over one run folder.

Run folder (``output_folder``)::

    run_info.json, hparams_resolved.yaml     how the run was made (identity checked on every rerun)
    manifests/, tokenizer/, scenario.json     data prepared once (the tokenizer sees the full training text)
    task<k>/save/                             SpeechBrain checkpoints of task k (one folder per task, so a
                                              finished EpochCounter of task k-1 never skips task k)
    task<k>/best_model.ckpt                   the best validation checkpoint's model weights (the one evaluated)
    task<k>/pseudo/                           seq-KD pseudo-labels of the memory (cache keyed by teacher weights)
    task<k>/predictions.jsonl                 SLURP-format predictions on the test items of all seen tasks
    task<k>/DONE                              written last; a task with it is skipped on rerun
    memory_after_task<k>.json                 rehearsal memory after task k
    results/step<k>.json                      scores after task k; report.{csv,md}, matrix_*.csv, *.png

Per task t: prepare (model from task t-1's best weights, teacher = frozen copy of them, memory after task t-1,
seq-KD pseudo-labels of the memory) -> train (resumable; validation on task t's devel items) -> load the best
checkpoint -> evaluate on the test items of every seen scenario -> write predictions and scores atomically ->
update the memory -> DONE. Every step is idempotent, so killing the job anywhere and rerunning the same command
finishes with the same results. The report is recomputed from ``results/`` at the end.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch
from speechbrain.dataio.sampler import ReproducibleRandomSampler
from speechbrain.utils.distributed import if_main_process, run_on_main

from slukd.continual.memory import RehearsalMemory
from slukd.continual.scenario import Scenario, make_scenario
from slukd.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from slukd.utils.run import config_fingerprint, record_run, seed_everything

logger = logging.getLogger(__name__)

#: hparams that do not change results (left out of the run identity).
NON_IDENTITY_KEYS = {"task", "output_folder", "num_workers", "noprogressbar", "device", "eval_batch_size"}


class TaskOrderError(RuntimeError):
    """``--task N`` asked for a task whose predecessor has not finished."""


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def identity_of(hp: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a run's results: row, seed and a fingerprint of every plain hparam."""
    plain = {
        k: v
        for k, v in hp.items()
        if k not in NON_IDENTITY_KEYS and (v is None or isinstance(v, (int, float, str, bool, list, dict, tuple)))
    }
    return {"row": hp["row"], "seed": hp["seed"], "hparams": config_fingerprint(plain)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and its finished children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


# ---------------------------------------------------------------------------------------------------- data
def prepare_data(hp: dict[str, Any], out: Path) -> tuple[dict[str, list[dict]], str]:
    """Synthesise the demo corpus on first use (``corpus: demo``), write the manifests (main process only) and
    read them. Returns ({split: rows}, data_root)."""
    from slukd.data.slurp import prepare_slurp, read_manifest

    data_folder = Path(hp["data_folder"])
    if hp["corpus"] == "demo":
        from slukd.data.synth_slu import synthesize_slu_corpus

        run_on_main(
            synthesize_slu_corpus,
            kwargs={"out_dir": str(data_folder), "tier": hp["demo_tier"], "seed": hp["corpus_seed"]},
        )
    elif hp["corpus"] != "slurp":
        raise ValueError(f"hparam corpus must be 'demo' or 'slurp', got {hp['corpus']!r}")
    splits = ["train", "devel", "test"] + (["train_synthetic"] if hp["use_synthetic"] else [])
    kwargs = {
        "data_folder": str(data_folder),
        "out_dir": str(out / "manifests"),
        "splits": splits,
        "max_duration": hp["max_duration"],
        "headset_only": hp["headset_only"],
        "skip_bad": hp["skip_bad"],
    }
    run_on_main(prepare_slurp, kwargs=kwargs)
    rows = {}
    for split in splits:
        path = out / "manifests" / f"{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {split} manifest (is {data_folder} a SLURP-layout corpus?)")
        rows[split] = read_manifest(path)
    if hp["use_synthetic"]:
        rows["train"] = rows["train"] + rows.pop("train_synthetic")
    for split in ("train", "devel", "test"):
        if not rows[split]:
            raise ValueError(f"{out / 'manifests' / (split + '.csv')}: the {split} manifest is empty")
    return rows, str(data_folder.resolve())


def prepare_tokenizer(hp: dict[str, Any], out: Path, rows: dict[str, list[dict]]):
    """Train the SentencePiece tokenizer once per run on the full training text, with every intent, entity type
    and separator as a whole token (the label inventory of all tasks is known up front)."""
    from slukd.data.target import special_tokens
    from slukd.data.tokenizer import MODEL_NAME, Tokenizer, train_tokenizer

    tok_dir = out / "tokenizer"
    if not (tok_dir / MODEL_NAME).is_file():
        all_rows = rows["train"] + rows["devel"] + rows["test"]
        intents = sorted({r["intent"] for r in all_rows})
        types = sorted({e["type"] for r in all_rows for e in r["entities"]})
        run_on_main(
            train_tokenizer,
            kwargs={
                "texts": [r["target"] for r in rows["train"]],
                "out_dir": str(tok_dir),
                "vocab_size": hp["vocab_size"],
                "user_symbols": special_tokens(intents, types),
            },
        )
    return Tokenizer.load(tok_dir / MODEL_NAME)


def prepare_scenario(hp: dict[str, Any], out: Path, rows: dict[str, list[dict]]) -> Scenario:
    """The task split (written to ``scenario.json``; a rerun with a different split is an error)."""
    scenario = make_scenario(hp["split"], hp["order"], hp["order_seed"], present={r["scenario"] for r in rows["train"]})
    path = out / "scenario.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != scenario.to_dict():
            raise RuntimeError(f"{path}: the run folder was made with another task split ({old['name']})")
    elif if_main_process():
        atomic_write_json(path, scenario.to_dict())
    logger.info("scenario %s: %s", scenario.name, " | ".join(",".join(t) for t in scenario.tasks))
    return scenario


# ---------------------------------------------------------------------------------------------------- one task
def build_model(hp: dict[str, Any], vocab_size: int) -> torch.nn.Module:
    """The student, from the ``model_class`` partial of the hparams (vocabulary size from the tokenizer)."""
    return hp["model_class"](vocab_size=vocab_size)


def _save_state(model: torch.nn.Module, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


COMPLETE_MARKER = "COMPLETE"


class CompleteCheckpointer(sb.utils.checkpoints.Checkpointer):
    """A SpeechBrain Checkpointer whose checkpoints count only once fully written.

    SpeechBrain writes ``CKPT.yaml`` first and the parameter files after it, so a job killed while saving leaves a
    folder that ``recover_if_possible`` would try (and fail) to load. Here a ``COMPLETE`` marker is written last;
    folders without it are ignored and deleted (main process) when the checkpointer is created.
    """

    def __init__(self, checkpoints_dir, *args, **kwargs):
        super().__init__(checkpoints_dir, *args, **kwargs)
        if if_main_process() and self.checkpoints_dir.is_dir():
            import shutil

            for d in sorted(self.checkpoints_dir.glob("CKPT+*")):
                if d.is_dir() and not (d / COMPLETE_MARKER).is_file():
                    logger.warning("removing incomplete checkpoint %s (interrupted while saving)", d)
                    shutil.rmtree(d)

    def save_checkpoint(self, *args, **kwargs):
        ckpt = super().save_checkpoint(*args, **kwargs)
        if ckpt is not None:
            atomic_write_text(Path(ckpt.path) / COMPLETE_MARKER, "ok\n")
        return ckpt

    def list_checkpoints(self):
        return [c for c in super().list_checkpoints() if (Path(c.path) / COMPLETE_MARKER).is_file()]


class TaskLoop:
    """Runs the tasks of one run folder (see the module docstring)."""

    def __init__(self, hp: dict[str, Any], run_opts: Any, hparams_text: str, argv: list[str] | None = None):
        self.hp = hp
        self.run_opts = run_opts
        self.out = Path(hp["output_folder"])
        self.out.mkdir(parents=True, exist_ok=True)
        if if_main_process():
            record_run(self.out, hparams_text, identity_of(hp), argv)
        _barrier()
        self.rows, self.data_root = prepare_data(hp, self.out)
        self.tokenizer = prepare_tokenizer(hp, self.out, self.rows)
        self.scenario = prepare_scenario(hp, self.out, self.rows)
        self.device = getattr(run_opts, "device", None) or (
            run_opts.get("device", "cpu") if isinstance(run_opts, dict) else "cpu"
        )
        self.amp = torch.bfloat16 if hp.get("precision", "fp32") == "bf16" else None
        n_total = len(self.rows["train"])
        self.memory_spec = {
            "selection": hp["memory"],
            "per_class": hp["memory_per_class"],
            "fraction": None if hp["memory_per_class"] is not None else hp["memory_fraction"],
            "total_items": n_total,
            "seed": hp["seed"],
        }

    # -------------------------------------------------------------- helpers
    def task_dir(self, t: int) -> Path:
        return self.out / f"task{t + 1}"

    def done(self, t: int) -> bool:
        return (self.task_dir(t) / "DONE").is_file()

    def _memory(self, t: int) -> RehearsalMemory | None:
        """The memory available to task t (after task t-1), None when rehearsal is off."""
        if self.hp["memory"] == "none":
            return None
        path = self.out / f"memory_after_task{t}.json"
        if t > 0 and path.is_file():
            return RehearsalMemory.load(path)
        if t > 0:
            raise FileNotFoundError(f"{path}: memory of task {t} missing although task {t} is done")
        return RehearsalMemory(**self.memory_spec)

    def _kd(self):
        from slukd.distill import EncoderMSE, KDObjective, TokenKL

        weights = {
            "audio": self.hp["audio_kd_weight"],
            "tok": self.hp["tok_kd_weight"],
            "seq": self.hp["seq_kd_weight"],
        }
        kd = KDObjective({k: v for k, v in weights.items() if v > 0}, mode=self.hp["kd_mode"])
        return kd, EncoderMSE, TokenKL

    # -------------------------------------------------------------- main
    def run(self, only_task: int | None = None) -> dict[str, Any] | None:
        """Run every unfinished task (or only task ``only_task``, 1-based), then write the report."""
        n = self.scenario.n_tasks
        if only_task is not None:
            if not 1 <= only_task <= n:
                raise TaskOrderError(f"--task {only_task}: the scenario has tasks 1..{n}")
            t = only_task - 1
            if t > 0 and not self.done(t - 1):
                raise TaskOrderError(
                    f"--task {only_task} needs task {t} finished first ({self.task_dir(t - 1) / 'DONE'} is missing)"
                )
            tasks = [t]
        else:
            tasks = list(range(n))
        for t in tasks:
            if self.done(t):
                logger.info("task %d/%d already done (%s)", t + 1, n, self.task_dir(t) / "DONE")
                continue
            self.run_task(t)
        summary = None
        if all(self.done(t) for t in range(n)) and if_main_process():
            from slukd.report import write_run_report

            summary = write_run_report(self.out)
            logger.info(
                "run finished: Avg Acc %.2f, Last Acc %.2f, Avg WER %.2f (report in %s)",
                100 * summary["avg_acc"],
                100 * summary["last_acc"],
                100 * summary["avg_wer"],
                self.out / "report.md",
            )
        _barrier()
        return summary

    def run_task(self, t: int) -> None:
        from slukd.distill import PseudoLabeler, Teacher
        from slukd.slu.brain import SLUBrain
        from slukd.slu.data import make_dataset
        from slukd.slu.evaluate import greedy_decode

        hp, n = self.hp, self.scenario.n_tasks
        t0 = time.perf_counter()
        tdir = self.task_dir(t)
        tdir.mkdir(parents=True, exist_ok=True)
        seed_everything(hp["seed"] * 1000 + t)
        model = build_model(hp, self.tokenizer.vocab_size)
        if t > 0:
            prev = self.task_dir(t - 1) / "best_model.ckpt"
            model.load_state_dict(torch.load(prev, map_location="cpu"))
            logger.info("task %d: model initialised from %s", t + 1, prev)
        model.to(self.device)

        memory = self._memory(t)
        mem_ids = memory.ids() if memory is not None else []
        by_id = {r["ID"]: r for r in self.rows["train"]}
        train_labels = [r["scenario"] for r in self.rows["train"]]
        task_rows = [self.rows["train"][i] for i in self.scenario.train_indices(train_labels, t)]
        mem_rows = [by_id[i] for i in mem_ids]
        valid_rows = [
            self.rows["devel"][i] for i in self.scenario.train_indices([r["scenario"] for r in self.rows["devel"]], t)
        ]
        logger.info(
            "task %d/%d %s: %d training items + %d memory items, %d validation items",
            t + 1,
            n,
            ",".join(self.scenario.tasks[t]),
            len(task_rows),
            len(mem_rows),
            len(valid_rows),
        )
        train_ds = make_dataset(task_rows + mem_rows, self.data_root, self.tokenizer, memory_ids=mem_ids)
        valid_ds = make_dataset(valid_rows, self.data_root, self.tokenizer)

        kd, kd_mse, kd_tok = self._kd()
        use_kd = t > 0 and bool(kd.active_terms) and bool(mem_ids)
        teacher = Teacher(model) if use_kd else None
        pseudo: dict[str, list[int]] = {}
        t_pseudo = time.perf_counter()
        if use_kd and kd.active("seq"):
            pseudo = self._pseudo_labels(teacher, mem_rows, tdir, PseudoLabeler)
        self._pseudo_s = time.perf_counter() - t_pseudo

        max_len = hp["max_decode_len"]
        counter = sb.utils.epoch_loop.EpochCounter(limit=hp["number_of_epochs"])
        checkpointer = CompleteCheckpointer(tdir / "save", recoverables={"model": model, "counter": counter})
        opt_class = functools.partial(torch.optim.AdamW, lr=hp["lr"], weight_decay=hp["weight_decay"])
        brain = SLUBrain(
            modules={"model": model},
            opt_class=opt_class,
            hparams=hp,
            run_opts=self.run_opts,
            checkpointer=checkpointer,
        )
        brain.tokenizer, brain.task, brain.seed = self.tokenizer, t, hp["seed"]
        brain.teacher = teacher.to(brain.device) if teacher is not None else None
        brain.kd = kd if use_kd else None
        enc_dim = model.encoder_dim
        brain.audio_kd = kd_mse(enc_dim, enc_dim) if use_kd and kd.active("audio") else None
        brain.tok_kd = kd_tok(hp["tok_kd_temperature"]) if use_kd and kd.active("tok") else None
        brain.pseudo = pseudo
        brain.decode_fn = functools.partial(greedy_decode, max_len=max_len)
        brain.gold_intent = {r["ID"]: r["intent"] for r in valid_rows}
        brain.train_logger = sb.utils.train_logger.FileTrainLogger(save_file=str(tdir / "train_log.txt"))
        brain.epoch_times_path = tdir / "epoch_times.json"
        sampler = ReproducibleRandomSampler(train_ds, seed=hp["seed"] * 7919 + t)
        brain.sampler = sampler
        brain.fit(
            counter,
            train_ds,
            valid_ds,
            train_loader_kwargs={"batch_size": hp["batch_size"], "sampler": sampler, "num_workers": hp["num_workers"]},
            valid_loader_kwargs={"batch_size": hp["eval_batch_size"], "num_workers": hp["num_workers"]},
        )
        best = checkpointer.recover_if_possible(max_key="select")
        if best is None:
            raise RuntimeError(f"{tdir / 'save'}: no checkpoint after training task {t + 1}")
        logger.info("task %d: best checkpoint %s (meta %s)", t + 1, best.path.name, best.meta)
        times_path = tdir / "epoch_times.json"
        times = json.loads(times_path.read_text(encoding="utf-8")) if times_path.is_file() else {}
        epoch_s = [times[k] for k in sorted(times, key=int)]
        model = brain.modules.model
        model = getattr(model, "module", model)  # unwrap DDP
        train_s = time.perf_counter() - t0
        run_on_main(
            self._finish_task,
            args=[t, model, memory, task_rows, dict(best.meta), train_s, epoch_s],
        )
        _barrier()

    def _pseudo_labels(self, teacher, mem_rows: list[dict], tdir: Path, labeler_cls) -> dict[str, list[int]]:
        """The teacher's beam-search hypotheses of the memory, decoded once per task (batched) and cached on disk."""
        from speechbrain.dataio.dataloader import make_dataloader

        from slukd.slu.data import make_dataset
        from slukd.slu.evaluate import beam_decode

        hp = self.hp
        beam, max_len = hp["pseudo_beam_size"], hp["max_decode_len"]
        device, amp = self.device, self.amp

        def decode_fn(batch):
            batch = batch.to(device)
            wavs, lens = batch.sig
            with torch.autocast(device_type=torch.device(device).type, dtype=amp, enabled=amp is not None):
                return teacher.run(lambda m: beam_decode(m, m.encode(wavs, lens), lens, beam, max_len))

        labeler = labeler_cls(
            decode_fn, tdir / "pseudo", teacher.fingerprint, config={"beam": beam, "max_len": max_len}
        )
        ds = make_dataset(mem_rows, self.data_root, self.tokenizer)
        if if_main_process():
            t0 = time.perf_counter()
            stats = labeler.ensure(make_dataloader(ds, batch_size=hp["eval_batch_size"]))
            logger.info("seq-KD pseudo-labels of %d memory items: %s (%.1f s)", len(mem_rows), stats,
                        time.perf_counter() - t0)  # fmt: skip
        _barrier()
        labeler.reload()
        return dict(zip([r["ID"] for r in mem_rows], labeler.get([r["ID"] for r in mem_rows])))

    def _finish_task(self, t, model, memory, task_rows, best_meta, train_s, epoch_s) -> None:
        """Main process: save best weights, evaluate, write predictions + scores, update the memory, mark DONE."""
        from slukd.data.target import ParseStats
        from slukd.slu.data import make_dataset
        from slukd.slu.evaluate import decode_items, encoder_features, predictions, score_step

        hp, tdir, n = self.hp, self.task_dir(t), self.scenario.n_tasks
        t0 = time.perf_counter()
        _save_state(model, tdir / "best_model.ckpt")
        test_rows = [
            self.rows["test"][i] for i in self.scenario.eval_indices([r["scenario"] for r in self.rows["test"]], t)
        ]
        test_ds = make_dataset(test_rows, self.data_root, self.tokenizer)
        hyps = decode_items(
            model,
            test_ds,
            self.tokenizer,
            beam_size=hp["test_beam_size"],
            batch_size=hp["eval_batch_size"],
            max_len=hp["max_decode_len"],
            device=self.device,
            precision=self.amp,
            desc=f"test after task {t + 1}",
        )
        stats = ParseStats()
        preds = predictions(test_rows, hyps, stats)
        atomic_write_jsonl(tdir / "predictions.jsonl", preds)
        scores = score_step(test_rows, preds, self.scenario.task_of, t)
        eval_s = time.perf_counter() - t0
        result = {
            "step": t + 1,
            "n_steps": n,
            "row": hp["row"],
            "seed": hp["seed"],
            "scenarios": list(self.scenario.tasks[t]),
            **scores,
            "parse": stats.as_dict(),
            "best_checkpoint": best_meta,
            "epoch_s": [e for e in epoch_s if e is not None],
            "train_s": train_s,
            "pseudo_s": getattr(self, "_pseudo_s", 0.0),
            "eval_s": eval_s,
            "wall_s": train_s + eval_s,
            "peak_rss_mb": peak_rss_mb(),
        }
        atomic_write_json(self.out / "results" / f"step{t + 1}.json", result)
        logger.info(
            "after task %d/%d: intent acc on seen tasks %.2f%% (per task: %s), WER %.2f%%, SLU-F1 %.2f%%",
            t + 1,
            n,
            100 * scores["seen"]["intent_acc"],
            ", ".join(f"{100 * p['intent_acc']:.1f}" for p in scores["per_task"]),
            100 * scores["seen"]["wer"],
            100 * scores["seen"]["slu_f1"],
        )
        if memory is not None and t < n - 1:
            feats = None
            if memory.selection == "herding":
                feats = encoder_features(
                    model, make_dataset(task_rows, self.data_root, self.tokenizer), hp["eval_batch_size"], self.device
                )
            memory.update([r["ID"] for r in task_rows], [r["scenario"] for r in task_rows], features=feats, task=t)
            memory.save(self.out / f"memory_after_task{t + 1}.json")
        atomic_write_text(tdir / "DONE", f"task {t + 1} finished\n")


# ---------------------------------------------------------------------------------------------------- hparams
def load_hparams(path: str | os.PathLike, overrides: str | dict | None = None) -> tuple[dict[str, Any], str]:
    """Load a row file: a YAML with ``base: <file>`` (relative to the row file) and plain overrides of it; the
    command-line ``overrides`` (YAML text or dict) come last, and may replace ``base`` itself. A file without
    ``base`` is loaded as it is. Returns (hparams, resolved YAML text). Unknown keys raise KeyError (hyperpyyaml)."""
    import io

    from hyperpyyaml import load_hyperpyyaml, resolve_references
    from ruamel.yaml import YAML

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hparams file not found: {path}")
    yaml = YAML(typ="safe", pure=True)
    cli = overrides if isinstance(overrides, dict) else (yaml.load(overrides) if overrides else None) or {}
    cli = dict(cli)
    text = path.read_text(encoding="utf-8")
    try:
        row = yaml.load(text)
    except Exception:  # hyperpyyaml tags (!new, !ref) in a full file: not a row file
        row = None
    if isinstance(row, dict) and "base" in row:
        base_name = cli.pop("base", row.pop("base"))
        base_path = Path(base_name) if Path(base_name).is_absolute() else path.parent / base_name
        if not base_path.is_file():
            raise FileNotFoundError(f"{path}: field 'base' names {base_path}, which does not exist")
        merged = {**row, **cli}
        text = base_path.read_text(encoding="utf-8")
    else:
        merged = cli
    hp = load_hyperpyyaml(text, overrides=merged)
    resolved = resolve_references(text, overrides=merged)
    resolved_text = resolved.getvalue() if isinstance(resolved, io.StringIO) else str(resolved)
    return hp, resolved_text


def main(argv: list[str] | None = None) -> int:
    """``python recipes/slurp_incremental.py ROW.yaml [--key value ...] [--task N]`` (see the recipe)."""
    import sys

    from slukd.utils.logging import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hp, resolved = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    setup_logging(log_file=Path(hp["output_folder"]) / "log.txt")
    task = hp["task"]
    loop = TaskLoop(hp, run_opts, resolved, ["recipes/slurp_incremental.py", *argv])
    loop.run(only_task=int(task) if task is not None else None)
    return 0
