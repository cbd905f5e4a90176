"""The class-incremental task loop of the SLURP recipe: a resumable state machine over one run folder.

Run folder (``output_folder``)::

    run_info.json, hparams_resolved.yaml     how the run was made (identity checked on every rerun)
    log.txt (log.rank<r>.txt under DDP)       the log, appended to by every rerun
    manifests/, tokenizer/, scenario.json     data prepared once (the tokenizer sees the full training text)
    audio_check.json                          every recording decoded once at the start; bad ones listed
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

Fault injection (tests only): ``SLUKD_DIE_AT=<phase>[:<task>[:<n>]]`` SIGKILLs the process at a point of the run:
``train:T:N`` at the N-th training batch of task T (counted in this process), ``pseudo:T:N`` after the N-th batch
of seq-KD pseudo-labelling, ``eval:T:N`` after the N-th test batch, ``memory:T`` after the step result is written
and before the memory update, ``report::N`` at the N-th file the report writes.

Scale out: under ``torchrun`` data preparation, pseudo-labelling, evaluation and every file write run on the main
process only (the others wait at a barrier); the teacher is a frozen copy outside ``modules``, never DDP-wrapped.
On a machine without CUDA the backend defaults to gloo.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import resource
import signal
import time
from collections import Counter
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


class UnknownHparamError(KeyError):
    """An override (row file or command line) names a key the base hparams file does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


DIE_ENV = "SLUKD_DIE_AT"


def maybe_die(phase: str, task: int | None = None, count: int | None = None) -> None:
    """Fault injection for the resume tests: SIGKILL this process when ``$SLUKD_DIE_AT`` names this point
    (``<phase>[:<task>[:<n>]]``, ``task`` 1-based; an empty field matches anything). No-op when unset."""
    spec = os.environ.get(DIE_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != phase:
        return
    if len(parts) > 1 and parts[1] and task is not None and int(parts[1]) != task:
        return
    if len(parts) > 2 and parts[2] and count is not None and int(parts[2]) != count:
        return
    logger.warning("%s=%s: killing this process (SIGKILL) at %s task %s #%s", DIE_ENV, spec, phase, task, count)
    for h in logging.getLogger().handlers:
        h.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def world_size() -> int:
    """Processes of this job (``WORLD_SIZE`` set by torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


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
    return {"row": hp["row"], "seed": hp["seed"], "hparams": config_fingerprint(plain), "world_size": world_size()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and its finished children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


# ---------------------------------------------------------------------------------------------------- data
def prepare_data(hp: dict[str, Any], out: Path) -> tuple[dict[str, list[dict]], str]:
    """Synthesise the demo corpus on first use (``corpus: demo``), write the manifests (main process only) and
    read them. Returns ({split: rows}, data_root)."""
    from slukd.data.slurp import prepare_slurp
    from slukd.slu.data import read_manifest_checked

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
        rows[split] = read_manifest_checked(path)
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
        self.data_report = self._check_audio()
        self.tokenizer = prepare_tokenizer(hp, self.out, self.rows)
        self.scenario = prepare_scenario(hp, self.out, self.rows)
        self.data_report.update(self._label_report())
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

    # -------------------------------------------------------------- data checks
    def _check_audio(self) -> dict[str, Any]:
        """Decode every recording once (main process, cached in ``audio_check.json``); drop the unusable ones
        (``skip_bad: true``, counted) or stop with :class:`slukd.slu.data.BadAudioError` naming them."""
        from slukd.data.audio import AudioCheck
        from slukd.slu.data import AUDIO_CHECK_NAME, check_split_audio, drop_bad_audio

        hp = self.hp
        path = self.out / AUDIO_CHECK_NAME
        if not hp["audio_check"]:
            return {"audio_checked": False}
        run_on_main(
            check_split_audio,
            args=[self.rows, self.data_root, path],
            kwargs={"sample_rate": hp["sample_rate"], "max_seconds": hp["max_audio_seconds"]},
        )
        check = AudioCheck.from_dict(json.loads(path.read_text(encoding="utf-8"))["check"])
        self.rows, skipped = drop_bad_audio(self.rows, self.data_root, check, hp["skip_bad"], where=str(path))
        for split in ("train", "devel", "test"):
            if not self.rows[split]:
                raise ValueError(f"{path}: no usable {split} recording is left after the audio check")
        if skipped.get("test"):
            logger.warning("test items with unusable audio are left out of every score: %s", skipped["test"])
        notes = {k: v for k, v in check.notes.items() if v}
        if notes:
            logger.info("audio handled while checking %d files: %s", check.n_files, notes)
        return {"audio_checked": True, "audio_skipped": skipped, "audio_notes": check.notes}

    def _label_report(self) -> dict[str, Any]:
        """Test items whose scenario is in no task (never scored) and test intents absent from training."""
        outside = Counter(r["scenario"] for r in self.rows["test"] if self.scenario.task_of(r["scenario"]) is None)
        train_intents = {r["intent"] for r in self.rows["train"]}
        unseen = Counter(r["intent"] for r in self.rows["test"] if r["intent"] not in train_intents)
        if outside:
            logger.warning(
                "%d test items belong to scenarios of no task and are not scored: %s",
                sum(outside.values()),
                dict(outside),
            )
        if unseen:
            logger.warning(
                "%d test items have intents absent from the training data (scored, never predictable): %s",
                sum(unseen.values()),
                dict(unseen),
            )
        return {
            "test_outside_tasks": dict(sorted(outside.items())),
            "test_unseen_intents": dict(sorted(unseen.items())),
        }

    def dataset(self, rows: list[dict], memory_ids=()):
        """A dataset of manifest rows with this run's audio settings."""
        from slukd.slu.data import make_dataset

        return make_dataset(
            rows,
            self.data_root,
            self.tokenizer,
            memory_ids=memory_ids,
            sample_rate=self.hp["sample_rate"],
            max_seconds=self.hp["max_audio_seconds"],
        )

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
            summary = _write_report(self.out)
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
        train_ds = self.dataset(task_rows + mem_rows, memory_ids=mem_ids)
        valid_ds = self.dataset(valid_rows)

        kd, kd_mse, kd_tok = self._kd()
        use_kd = t > 0 and bool(kd.active_terms) and bool(mem_ids)
        teacher = Teacher(model) if use_kd else None
        pseudo: dict[str, list[int]] = {}
        t_pseudo = time.perf_counter()
        if use_kd and kd.active("seq"):
            pseudo = self._pseudo_labels(teacher, mem_rows, tdir, PseudoLabeler)
        self._pseudo_s = time.perf_counter() - t_pseudo

        max_len = hp["max_decode_len"]
        epochs = hp["number_of_epochs"]
        if t > 0 and hp.get("later_task_epochs") is not None:
            epochs = hp["later_task_epochs"]
        counter = sb.utils.epoch_loop.EpochCounter(limit=epochs)
        checkpointer = CompleteCheckpointer(tdir / "save", recoverables={"model": model, "counter": counter})
        opt_class = functools.partial(torch.optim.AdamW, lr=hp["lr"], weight_decay=hp["weight_decay"], foreach=True)
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
        brain.train_log_path = tdir / "train_log.txt"
        brain.batch_hook = functools.partial(maybe_die, "train", t + 1)
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

        from slukd.slu.evaluate import beam_decode

        hp = self.hp
        beam, max_len = hp["pseudo_beam_size"], hp["max_decode_len"]
        device, amp = self.device, self.amp

        n_batches = [0]
        task = int(tdir.name[4:])

        def decode_fn(batch):
            batch = batch.to(device)
            wavs, lens = batch.sig
            with torch.autocast(device_type=torch.device(device).type, dtype=amp, enabled=amp is not None):
                hyps = teacher.run(lambda m: beam_decode(m, m.encode(wavs, lens), lens, beam, max_len))
            n_batches[0] += 1
            maybe_die("pseudo", task, n_batches[0])
            return hyps

        labeler = labeler_cls(
            decode_fn, tdir / "pseudo", teacher.fingerprint, config={"beam": beam, "max_len": max_len}
        )
        ds = self.dataset(mem_rows)
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
        from slukd.slu.evaluate import decode_items, encoder_features, predictions, score_step

        hp, tdir, n = self.hp, self.task_dir(t), self.scenario.n_tasks
        t0 = time.perf_counter()
        _save_state(model, tdir / "best_model.ckpt")
        test_rows = [
            self.rows["test"][i] for i in self.scenario.eval_indices([r["scenario"] for r in self.rows["test"]], t)
        ]
        test_ds = self.dataset(test_rows)
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
            progress=not hp.get("noprogressbar", False),
            on_batch=lambda k: maybe_die("eval", t + 1, k),
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
            "data": self.data_report,
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
        maybe_die("memory", t + 1)
        if memory is not None and t < n - 1:
            feats = None
            if memory.selection == "herding":
                feats = encoder_features(
                    model, self.dataset(task_rows), hp["eval_batch_size"], self.device, progress=False
                )
            memory.update([r["ID"] for r in task_rows], [r["scenario"] for r in task_rows], features=feats, task=t)
            memory.save(self.out / f"memory_after_task{t + 1}.json")
        atomic_write_text(tdir / "DONE", f"task {t + 1} finished\n")


def _write_report(out: Path) -> dict[str, Any]:
    """``slukd.report.write_run_report`` (with the ``report::N`` fault-injection point when asked for)."""
    import slukd.report as report

    spec = os.environ.get(DIE_ENV, "")
    if not spec.startswith("report"):
        return report.write_run_report(out)
    original, n = report.atomic_write_text, [0]

    def counting_write(*args, **kwargs):
        n[0] += 1
        maybe_die("report", None, n[0])
        return original(*args, **kwargs)

    report.atomic_write_text = counting_write
    try:
        return report.write_run_report(out)
    finally:
        report.atomic_write_text = original


# ---------------------------------------------------------------------------------------------------- hparams
def load_hparams(path: str | os.PathLike, overrides: str | dict | None = None) -> tuple[dict[str, Any], str]:
    """Load a row file: a YAML with ``base: <file>`` (relative to the row file) and plain overrides of it; the
    command-line ``overrides`` (YAML text or dict) come last, and may replace ``base`` itself. A file without
    ``base`` is loaded as it is. Returns (hparams, resolved YAML text). An override of a key the base file lacks
    raises :class:`UnknownHparamError` (a KeyError) naming the key, where it came from and close matches."""
    import io

    from hyperpyyaml import load_hyperpyyaml, resolve_references
    from ruamel.yaml import YAML

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hparams file not found: {path}")
    yaml = YAML(typ="safe", pure=True)
    try:
        cli = overrides if isinstance(overrides, dict) else (yaml.load(overrides) if overrides else None) or {}
    except Exception as err:  # duplicate or malformed --key value options
        first = str(err).strip().splitlines()
        raise ValueError(f"bad command-line overrides for {path}: {' '.join(first[:6])}") from None
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
        base_path = path
        merged = cli
    try:
        hp = load_hyperpyyaml(text, overrides=merged)
    except KeyError as err:
        m = re.search(r"Override '([^']+)' not found", str(err))
        if m is None:
            raise
        raise UnknownHparamError(_unknown_key_message(m.group(1), cli, path, base_path, text)) from None
    resolved = resolve_references(text, overrides=merged)
    resolved_text = resolved.getvalue() if isinstance(resolved, io.StringIO) else str(resolved)
    return hp, resolved_text


def _unknown_key_message(key: str, cli: dict, row_path: Path, base_path: Path, text: str) -> str:
    import difflib

    from ruamel.yaml import YAML

    where = f"command-line override --{key}" if key in cli else f"{row_path}: key {key!r}"
    try:
        known = list(YAML(typ="rt").load(text))
    except Exception:  # pragma: no cover - the base file loaded a moment ago
        known = []
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(known)}"
    return f"{where}: no hparam {key!r} in {base_path}{hint}"


def main(argv: list[str] | None = None) -> int:
    """``python recipes/slurp_incremental.py ROW.yaml [--key value ...] [--task N]`` (see the recipe)."""
    import sys

    from slukd.utils.logging import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hp, resolved = load_hparams(hparams_file, overrides)
    rank = int(os.environ.get("RANK", "0") or 0)
    if "RANK" in os.environ and "LOCAL_RANK" in os.environ:
        if "distributed_backend" not in run_opts.overridden_args and not torch.cuda.is_available():
            import dataclasses

            run_opts = dataclasses.replace(  # nccl needs CUDA; the Brain reads only overridden run options
                run_opts,
                distributed_backend="gloo",
                overridden_args={*run_opts.overridden_args, "distributed_backend"},
            )
            logger.info("no CUDA: DDP backend gloo")
        sb.utils.distributed.ddp_init_group(run_opts)
    setup_logging(log_file=Path(hp["output_folder"]) / ("log.txt" if rank == 0 else f"log.rank{rank}.txt"))
    task = hp["task"]
    # run_info.json: the command (of one process) and, in the identity, the number of processes
    loop = TaskLoop(hp, run_opts, resolved, ["recipes/slurp_incremental.py", *argv])
    loop.run(only_task=int(task) if task is not None else None)
    return 0
