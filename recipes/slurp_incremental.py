#!/usr/bin/env python3
"""Class-incremental end-to-end SLU on SLURP with rehearsal and knowledge distillation (one YAML per table row).

    python recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml [--seed 1] [--key value ...]
    python recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml --task 2     # one task per job
    torchrun --nproc_per_node=4 recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml --device cuda

The 18 SLURP scenarios arrive in tasks (``split``: slurp3 | slurp6 | joint). Task t trains the seq2seq student
(intent, slots and transcript as one target) on its scenarios' training items plus the rehearsal memory, starting
from task t-1's model; the KD terms of the row (encoder/audio-KD, tok-KD, seq-KD) distil a frozen copy of that
model into the student on the memory items; the best validation checkpoint is tested on every scenario seen so
far; the memory is then updated. Rerunning the same command resumes where it stopped.

Wiring, top to bottom: data (corpus, manifests, tokenizer, scenario) -> datasets -> the strategy (one task:
model, teacher, teacher targets, SLUBrain.fit; evaluation; memory) -> the continual loop.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path

import torch
from speechbrain.utils.distributed import if_main_process

from slukd.continual import ContinualRunner, RehearsalMemory
from slukd.continual.first_task import FirstTaskCache, code_fingerprint
from slukd.continual.memory import memory_budget
from slukd.continual.runner import TaskOrderError
from slukd.data.audio import set_audio_cache
from slukd.data.fingerprint import fingerprint_digest
from slukd.data.target import ParseStats
from slukd.distill import Teacher
from slukd.experiment import main_guard, start_experiment
from slukd.metrics.wer import write_wer_alignments
from slukd.report import write_run_report
from slukd.report.curves import plot_train_log
from slukd.slu import SLUBrain, label_report, make_dataset, prepare_corpus, prepare_scenario, prepare_tokenizer
from slukd.slu.data import audio_path
from slukd.slu.evaluate import predictions, score_step
from slukd.train import CompleteCheckpointer, make_train_logger
from slukd.train.decode import decode, decode_dataset, pooled_features
from slukd.train.sampling import train_loader
from slukd.train.targets import teacher_targets
from slukd.utils.faults import maybe_die
from slukd.utils.io import atomic_torch_save, atomic_write_jsonl
from slukd.utils.model_io import save_model_spec
from slukd.utils.run import seed_everything, settings_identity

logger = logging.getLogger("slurp_incremental")

#: hparams that cannot change results (left out of the run identity; every other resolved setting is in it).
NOT_IDENTITY = frozenset(
    {
        "task",
        "output_folder",
        "num_workers",
        "noprogressbar",
        "device",
        "eval_batch_size",
        "first_task_cache",
        "audio_cache_mb",
        "data_changed",
        "data_fingerprint_audio",
        "test_data_folder",
    }
)
#: hparams that cannot change task 1 (no memory or teacher exists yet): rows differing only in these share it.
NOT_FIRST_TASK = frozenset(
    {"row", "memory", "memory_per_class", "memory_fraction", "kd_mode", "enc_kd_weight", "tok_kd_weight",
     "seq_kd_weight", "tok_kd_temperature", "pseudo_beam_size", "kd_terms", "extra_kd_terms", "later_task_epochs",
     "valid_scope"}
)  # fmt: skip


class SLURPIncremental:
    """The strategy the continual runner calls (train / evaluate / memory), for one run folder."""

    def __init__(self, hparams, run_opts, data, tokenizer, scenario, runner):
        self.hp, self.run_opts, self.data = hparams, run_opts, data
        self.tokenizer, self.scenario, self.runner = tokenizer, scenario, runner
        self.device = run_opts.device if run_opts.device else "cpu"

    # ---------------------------------------------------------------- data
    def dataset(self, rows, memory_ids=()):
        return make_dataset(
            rows, self.data.root, self.tokenizer, memory_ids=memory_ids,
            sample_rate=self.hp["sample_rate"], max_seconds=self.hp["max_audio_seconds"],
        )  # fmt: skip

    def task_rows(self, split: str, t: int) -> list[dict]:
        rows = self.data.rows[split]
        return [rows[i] for i in self.scenario.train_indices([r["scenario"] for r in rows], t)]

    def valid_rows(self, t: int) -> list[dict]:
        """Checkpoint selection data: the devel items of every scenario seen so far (``valid_scope: seen``, so the
        epoch that forgot most is not favoured) or of task t's scenarios only (``current``)."""
        if self.hp["valid_scope"] == "current":
            return self.task_rows("devel", t)
        rows = self.data.rows["devel"]
        return [rows[i] for i in self.scenario.eval_indices([r["scenario"] for r in rows], t)]

    # ---------------------------------------------------------------- train one task
    def train(self, t: int, memory: RehearsalMemory | None):
        hp, tdir = self.hp, self.runner.task_dir(t)
        seed_everything(hp["seed"] * 1000 + t)
        model = hp["model"](vocab_size=self.tokenizer.vocab_size)
        if t > 0:
            prev = self.runner.task_dir(t - 1) / "best_model.ckpt"
            model.load_state_dict(torch.load(prev, map_location="cpu"))
            logger.info("task %d: model initialised from %s", t + 1, prev)
        model.to(self.device)

        by_id = {r["ID"]: r for r in self.data.rows["train"]}
        mem_ids = [i for i in (memory.ids() if memory is not None else []) if i in by_id]
        if memory is not None and len(mem_ids) < len(memory):  # e.g. audio gone after data_changed: keep
            self.data.report["memory_items_missing"] = len(memory) - len(mem_ids)
            logger.warning("task %d: %d memory items have no usable data any more: skipped", t + 1,
                           len(memory) - len(mem_ids))  # fmt: skip
        task_rows, mem_rows = self.task_rows("train", t), [by_id[i] for i in mem_ids]
        valid_rows = self.valid_rows(t)
        logger.info(
            "task %d/%d %s: %d training items + %d memory items, %d validation items", t + 1, self.scenario.n_tasks,
            ",".join(self.scenario.tasks[t]), len(task_rows), len(mem_rows), len(valid_rows),
        )  # fmt: skip
        train_ds, valid_ds = self.dataset(task_rows + mem_rows, memory_ids=mem_ids), self.dataset(valid_rows)

        # knowledge distillation: the frozen model of task t-1 teaches on the memory items
        kd_terms = [term for term in hp["kd_terms"] + hp["extra_kd_terms"] if term.active]
        use_kd = t > 0 and bool(kd_terms) and bool(mem_ids)
        teacher = Teacher(model) if use_kd else None
        targets, t_targets = None, time.perf_counter()
        if use_kd:
            for term in kd_terms:
                term.setup(model.encoder_dim, model.encoder_dim)
            if any("teacher_hyps" in term.needs for term in kd_terms):
                targets = teacher_targets(
                    teacher, self.dataset(mem_rows), {r["ID"]: audio_path(r, self.data.root) for r in mem_rows},
                    tdir / "targets", {"beam": hp["pseudo_beam_size"], "max_len": hp["max_decode_len"],
                                       "precision": hp["eval_precision"]},
                    beam_size=hp["pseudo_beam_size"], max_len=hp["max_decode_len"], precision=hp["eval_precision"],
                    device=self.device, batch_size=hp["eval_batch_size"], hyps=True, emb=False,
                    loading=(hp["sample_rate"], hp["max_audio_seconds"]),
                    on_batch=functools.partial(maybe_die, "targets", t + 1),
                )  # fmt: skip
        targets_s = time.perf_counter() - t_targets

        epochs = hp["number_of_epochs"] if t == 0 or hp["later_task_epochs"] is None else hp["later_task_epochs"]
        counter = hp["epoch_counter"](limit=epochs)
        checkpointer = CompleteCheckpointer(tdir / "save", recoverables={"model": model, "counter": counter})
        brain = SLUBrain(
            modules={"model": model}, opt_class=hp["opt_class"], hparams=hp, run_opts=self.run_opts,
            checkpointer=checkpointer, teacher=teacher, kd_terms=kd_terms, kd_mode=hp["kd_mode"], targets=targets,
        )  # fmt: skip
        brain.tokenizer, brain.task, brain.label = self.tokenizer, t, f"task {t + 1}"
        brain.bos_id, brain.eos_id, brain.pad_id = self.tokenizer.bos_id, self.tokenizer.eos_id, 0
        brain.seed_base = hp["seed"] * 1_000_003 + t * 1009
        brain.lr_schedule = hp["lr_schedule"]
        brain.decode_fn = functools.partial(decode, beam_size=1, max_len=hp["max_decode_len"])
        brain.gold_intent = {r["ID"]: r["intent"] for r in valid_rows}
        brain.train_logger = make_train_logger(hp, tdir / "train_log.txt", self.runner.out / "tensorboard" / tdir.name)
        brain.train_log_path, brain.epoch_times_path = tdir / "train_log.txt", tdir / "epoch_times.json"
        brain.batch_hook = functools.partial(maybe_die, "train", t + 1)
        durations = [r["duration"] for r in task_rows + mem_rows]
        train_set, loader_kwargs, brain.sampler = train_loader(
            hp["batching"], train_ds, durations, hp["batch_size"], hp["seed"] * 7919 + t, hp["num_workers"]
        )
        brain.fit(
            counter, train_set, valid_ds, train_loader_kwargs=loader_kwargs,
            valid_loader_kwargs={"batch_size": hp["eval_batch_size"], "num_workers": hp["num_workers"]},
        )  # fmt: skip

        best = checkpointer.recover_if_possible(max_key="select")
        if best is None:
            raise RuntimeError(f"{tdir / 'save'}: no checkpoint after training task {t + 1}")
        logger.info("task %d: best checkpoint %s (meta %s)", t + 1, best.path.name, best.meta)
        model = brain._model
        if if_main_process():
            atomic_torch_save(model.state_dict(), tdir / "best_model.ckpt")
        return model, {
            "best_checkpoint": dict(best.meta),
            "epoch_s": self._epoch_seconds(tdir),
            "targets_s": targets_s,
            "valid_scope": hp["valid_scope"],
            "n_valid": len(valid_rows),
            "data": self.data.report,
        }

    @staticmethod
    def _epoch_seconds(tdir: Path) -> list[float]:
        import json

        path = tdir / "epoch_times.json"
        times = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return [times[k] for k in sorted(times, key=int) if times[k] is not None]

    # ---------------------------------------------------------------- evaluate after task t
    def evaluate(self, t: int, model, dest: Path | None = None) -> dict | None:
        """Test after task t on every seen scenario (decoding spread over the DDP processes); the main process
        writes ``predictions.jsonl`` and ``wer.txt`` (per-utterance alignments) into ``dest`` (default the task
        folder) and returns the scores; the others return None."""
        hp, tdir = self.hp, dest or self.runner.task_dir(t)
        test_rows = [
            self.data.rows["test"][i]
            for i in self.scenario.eval_indices([r["scenario"] for r in self.data.rows["test"]], t)
        ]
        tokens = decode_dataset(
            model, self.dataset(test_rows), beam_size=hp["test_beam_size"], batch_size=hp["eval_batch_size"],
            max_len=hp["max_decode_len"], device=self.device, precision=hp["eval_precision"],
            desc=f"test after task {t + 1}", progress=not hp["noprogressbar"],
            on_batch=lambda k: maybe_die("eval", t + 1, k),
        )  # fmt: skip
        if not if_main_process():
            return None
        hyps = {i: self.tokenizer.decode(h) for i, h in tokens.items()}
        stats = ParseStats()
        preds = predictions(test_rows, hyps, stats)
        atomic_write_jsonl(tdir / "predictions.jsonl", preds)
        by_id = {p["id"]: p for p in preds}
        write_wer_alignments(tdir / "wer.txt", [r["ID"] for r in test_rows], [r["transcript"] for r in test_rows],
                             [by_id.get(r["ID"], {}).get("transcript", "") for r in test_rows])  # fmt: skip
        scores = score_step(test_rows, preds, self.scenario.task_of, t)
        logger.info(
            "after task %d/%d: intent acc on seen tasks %.2f%% (per task: %s), WER %.2f%%, SLU-F1 %.2f%%",
            t + 1, self.scenario.n_tasks, 100 * scores["seen"]["intent_acc"],
            ", ".join(f"{100 * p['intent_acc']:.1f}" for p in scores["per_task"]),
            100 * scores["seen"]["wer"], 100 * scores["seen"]["slu_f1"],
        )  # fmt: skip
        if dest is None:
            plot_train_log(tdir / "train_log.txt", tdir / "curves.png")
        return {"scenarios": list(self.scenario.tasks[t]), **scores, "parse": stats.as_dict()}

    # ---------------------------------------------------------------- rehearsal memory
    def load_trained(self, t: int):
        model = self.hp["model"](vocab_size=self.tokenizer.vocab_size)
        model.load_state_dict(torch.load(self.runner.task_dir(t) / "best_model.ckpt", map_location="cpu"))
        return model.to(self.device)

    def memory_candidates(self, t: int) -> tuple[list[str], list[str]]:
        rows = self.task_rows("train", t)
        return [r["ID"] for r in rows], [r["scenario"] for r in rows]

    def features(self, t: int, model, ids: list[str]) -> torch.Tensor:
        by_id = {r["ID"]: r for r in self.data.rows["train"]}
        ds = self.dataset([by_id[i] for i in ids])
        return pooled_features(model, ds, self.hp["eval_batch_size"], self.device, self.hp["eval_precision"])


def main(argv: list[str]) -> int:
    hparams, run_opts = start_experiment(argv, NOT_IDENTITY, recipe="recipes/slurp_incremental.py")
    out = Path(hparams["output_folder"])
    set_audio_cache(hparams["audio_cache_mb"])

    # data: corpus and manifests (audio decoded once), tokenizer, task split
    data = prepare_corpus(hparams, out)
    tokenizer = prepare_tokenizer(hparams, out, data)
    scenario = prepare_scenario(hparams, out, data)
    data.report.update(label_report(data, scenario))
    if if_main_process():  # how to rebuild the model (inference, export): model.yaml next to the tokenizer
        save_model_spec(
            out, (out / "hparams_resolved.yaml").read_text(encoding="utf-8"), vocab_size=tokenizer.vocab_size,
            test_beam_size=hparams["test_beam_size"], max_decode_len=hparams["max_decode_len"],
            eval_precision=hparams["eval_precision"], sample_rate=hparams["sample_rate"],
            tasks=[list(task) for task in scenario.tasks],
        )  # fmt: skip

    # rehearsal memory: the budget and selection rule (filled at the end of each task)
    memory = memory_budget(hparams["memory"], hparams["memory_per_class"], hparams["memory_fraction"],
                           total_items=len(data.rows["train"]), seed=hparams["seed"])  # fmt: skip

    # the first task is shared by the rows of a seed (no memory, no teacher yet): trained once, reused by the others
    cache, key = None, None
    if hparams["first_task_cache"] is not None and scenario.n_tasks > 1:
        resolved = (out / "hparams_resolved.yaml").read_text(encoding="utf-8")
        settings = settings_identity(resolved, NOT_IDENTITY | NOT_FIRST_TASK)
        settings["code"] = code_fingerprint([__file__])
        settings["data"] = fingerprint_digest(out)  # the data itself, not only its folder (issue 28)
        cache, key = FirstTaskCache(hparams["first_task_cache"]), FirstTaskCache.key(settings)

    # the continual loop
    runner = ContinualRunner(out, scenario.n_tasks, memory, header={"row": hparams["row"], "seed": hparams["seed"]},
                             first_task_cache=cache, first_task_key=key, report=write_run_report)  # fmt: skip
    strategy = SLURPIncremental(hparams, run_opts, data, tokenizer, scenario, runner)
    task = hparams["task"]
    if run_opts.test_only:  # evaluate finished tasks again (on the run's test split or on test_data_folder)
        return test_only(hparams, strategy, runner, data, int(task) if task is not None else None)
    summary = runner.run(strategy, only_task=int(task) if task is not None else None)
    if summary:  # every task done (main process): the report's headline
        logger.info("Avg Acc %.2f, Last Acc %.2f, Avg WER %.2f (report in %s)", 100 * summary["avg_acc"],
                    100 * summary["last_acc"], 100 * summary["avg_wer"], out / "report.md")  # fmt: skip
    return 0


def test_only(hparams, strategy, runner, data, only_task):
    """``--test_only``: the selected model of each finished task (or of ``--task N``) decodes the test split again
    (or the test split of ``test_data_folder``); predictions, wer.txt and scores go to ``<output_folder>/test_only``
    and the run's own results are never touched."""
    import json

    from slukd.data.audio import dropped_items
    from slukd.data.slurp import prepare_slurp
    from slukd.slu.data import read_manifest_checked
    from slukd.utils.io import atomic_write_json

    dest = runner.out / "test_only"
    report = data.report
    if hparams["test_data_folder"]:
        from slukd.data.audio import check_and_drop_audio
        from slukd.data.slurp import read_prepare_report

        folder = Path(hparams["test_data_folder"])
        prepare_slurp(str(folder), str(dest / "manifests"), splits=["test"], skip_bad=hparams["skip_bad"])
        data.rows["test"] = read_manifest_checked(dest / "manifests" / "test.csv")
        data.root = str(folder.resolve())
        rows, audio_skipped, _ = check_and_drop_audio(
            {"test": data.rows["test"]}, data.root, dest, sample_rate=hparams["sample_rate"],
            max_seconds=hparams["max_audio_seconds"], skip_bad=hparams["skip_bad"], required=("test",),
        )  # fmt: skip
        data.rows["test"] = rows["test"]
        report = {"prepare_skipped": read_prepare_report(dest / "manifests").skipped, "audio_skipped": audio_skipped}
    tasks = [t for t in range(runner.n_tasks) if runner.done(t)]
    if only_task is not None:
        tasks = [t for t in tasks if t == only_task - 1]
    if not tasks:
        raise TaskOrderError(f"{runner.out}: no finished task to test (--test_only needs a trained task)")
    for t in tasks:
        tdir = dest / f"task{t + 1}"
        tdir.mkdir(parents=True, exist_ok=True)
        scores = strategy.evaluate(t, strategy.load_trained(t), dest=tdir)
        if scores is not None:
            source = hparams["test_data_folder"] or hparams["data_folder"]
            atomic_write_json(
                dest / "results" / f"step{t + 1}.json",
                {"step": t + 1, "test_data": source, "dropped": dropped_items(report), **scores},
            )
            logger.info("test_only: task %d -> %s", t + 1, json.dumps(scores["seen"]))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main, doc=__doc__))
