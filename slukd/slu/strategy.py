"""The SLU strategy the continual runner calls: train one task (model, teacher, teacher targets, ``SLUBrain.fit``),
test after it, and what the continual plugins may ask of the data (a task's items, batches, the student's forward
pass and loss, pooled features). One object per run folder; the recipe builds it after the data.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.utils.distributed import if_main_process

from slukd.continual.plugin import ContinualPlugin, TaskView
from slukd.data.target import ParseStats
from slukd.distill import TEACHER_NEEDS, Teacher, TeacherTargets
from slukd.metrics.wer import write_wer_alignments
from slukd.report.curves import plot_train_log
from slukd.slu.brain import SLUBrain, slu_forward, slu_loss
from slukd.slu.data import audio_path, make_dataset
from slukd.slu.evaluate import predictions, score_step
from slukd.train import CompleteCheckpointer, make_train_logger
from slukd.train.brain import read_epoch_times
from slukd.train.decode import decode, decode_dataset, pooled_features
from slukd.train.sampling import train_loader
from slukd.train.targets import teacher_targets
from slukd.utils.faults import maybe_die
from slukd.utils.io import atomic_torch_save, atomic_write_jsonl
from slukd.utils.run import seed_everything

logger = logging.getLogger(__name__)

__all__ = ["SLUStrategy", "task_epochs"]


def task_epochs(first: int, later: int | list[int] | None, t: int) -> int:
    """Epochs of task t (0-based): ``first`` for task 1; then ``later`` (one number for every later task, or a list
    for tasks 2, 3, ... whose last value repeats; None: ``first`` again)."""
    if t == 0 or later is None:
        return int(first)
    if isinstance(later, list):
        if not later or any(not isinstance(e, int) or e < 1 for e in later):
            raise ValueError(f"later_task_epochs: a list of positive integers, got {later}")
        return int(later[min(t - 1, len(later) - 1)])
    return int(later)


class SLUStrategy:
    """Train / evaluate / data access for one SLU run folder (the continual runner's
    :class:`slukd.continual.Strategy`, and the :class:`slukd.continual.plugin.TaskData` of the plugins)."""

    def __init__(self, hparams: dict, run_opts: Any, data: Any, tokenizer: Any, scenario: Any, runner: Any) -> None:
        self.hp, self.run_opts, self.data = hparams, run_opts, data
        self.tokenizer, self.scenario, self.runner = tokenizer, scenario, runner
        self.device = run_opts.device if run_opts.device else "cpu"
        self._train_by_id = {r["ID"]: r for r in data.rows["train"]}

    # ---------------------------------------------------------------- data
    def dataset(self, rows: list[dict], memory_ids: Sequence[str] = ()):
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

    # ---------------------------------------------------------------- what the plugins may use
    def memory_candidates(self, t: int) -> tuple[list[str], list[str]]:
        rows = self.task_rows("train", t)
        return [r["ID"] for r in rows], [r["scenario"] for r in rows]

    def features(self, t: int, model: torch.nn.Module, ids: list[str]) -> torch.Tensor:
        ds = self.dataset([self._train_by_id[i] for i in ids])
        return pooled_features(model, ds, self.hp["eval_batch_size"], self.device, self.hp["eval_precision"])

    def batches(self, ids: Sequence[str], batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Any]:
        rows = [self._train_by_id[i] for i in ids if i in self._train_by_id]
        if shuffle:
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
            rows = [rows[i] for i in order]
        yield from make_dataloader(self.dataset(rows), batch_size=batch_size)

    def forward(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        _, out = slu_forward(model, batch.to(self.device), ctc=self.hp["ctc_weight"] > 0)
        tokens_eos, eos_lens = batch.tokens_eos
        length = tokens_eos.shape[1]
        n_valid = torch.round(eos_lens * length).long()
        out["gold_mask"] = torch.arange(length, device=n_valid.device)[None, :] < n_valid[:, None]
        return out

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        batch = batch.to(self.device)
        _, out = slu_forward(model, batch, ctc=self.hp["ctc_weight"] > 0)
        return slu_loss(out, batch, self.hp["ctc_weight"], self.hp["label_smoothing"])

    def load_trained(self, t: int) -> torch.nn.Module:
        model = self.hp["model"](vocab_size=self.tokenizer.vocab_size)
        model.load_state_dict(torch.load(self.runner.task_dir(t) / "best_model.ckpt", map_location="cpu"))
        return model.to(self.device)

    # ---------------------------------------------------------------- train one task
    def train(self, t: int, plugins: list[ContinualPlugin]) -> tuple[torch.nn.Module, dict[str, Any]]:
        hp, tdir = self.hp, self.runner.task_dir(t)
        seed_everything(hp["seed"] * 1000 + t)
        model = hp["model"](vocab_size=self.tokenizer.vocab_size)
        if t > 0:
            prev = self.runner.task_dir(t - 1) / "best_model.ckpt"
            model.load_state_dict(torch.load(prev, map_location="cpu"))
            logger.info("task %d: model initialised from %s", t + 1, prev)
        model.to(self.device)
        view = TaskView(t=t, model=model, data=self, seed=hp["seed"] * 1000 + t)

        # the plugins' extra training items (rehearsal: the memory), flagged as memory items
        wanted = [i for p in plugins for i in p.train_items(view)]
        mem_ids = [i for i in wanted if i in self._train_by_id]
        if len(mem_ids) < len(wanted):  # e.g. audio gone after data_changed: keep going without them
            self.data.report["memory_items_missing"] = len(wanted) - len(mem_ids)
            logger.warning("task %d: %d memory items have no usable data any more: skipped", t + 1,
                           len(wanted) - len(mem_ids))  # fmt: skip
        task_rows, mem_rows = self.task_rows("train", t), [self._train_by_id[i] for i in mem_ids]
        valid_rows = self.valid_rows(t)
        logger.info(
            "task %d/%d %s: %d training items + %d memory items, %d validation items", t + 1, self.scenario.n_tasks,
            ",".join(self.scenario.tasks[t]), len(task_rows), len(mem_rows), len(valid_rows),
        )  # fmt: skip
        train_ds, valid_ds = self.dataset(task_rows + mem_rows, memory_ids=mem_ids), self.dataset(valid_rows)

        # knowledge distillation: the frozen model of task t-1 teaches (on the memory items, or on every item with
        # kd_scope: all); the plugins that need it get it too
        t_targets = time.perf_counter()
        kd_rows = mem_rows if hp["kd_scope"] == "memory" else task_rows + mem_rows
        kd_terms, teacher, targets = self.distillation(t, model, plugins, kd_rows)
        targets_s = time.perf_counter() - t_targets
        view.teacher = teacher
        for p in plugins:
            p.before_task(view)

        epochs = task_epochs(hp["number_of_epochs"], hp["later_task_epochs"], t)
        counter = hp["epoch_counter"](limit=epochs)
        checkpointer = CompleteCheckpointer(tdir / "save", recoverables={"model": model, "counter": counter})
        durations = [r["duration"] for r in task_rows + mem_rows]
        train_set, loader_kwargs, sampler = train_loader(
            hp["batching"], train_ds, durations, hp["batch_size"], hp["seed"] * 7919 + t, hp["num_workers"]
        )
        brain = SLUBrain(
            modules={"model": model}, opt_class=hp["opt_class"], hparams=hp, run_opts=self.run_opts,
            checkpointer=checkpointer, teacher=teacher, kd_terms=kd_terms, kd_mode=hp["kd_mode"],
            targets=targets, plugins=plugins, kd_scope=hp["kd_scope"], sampler=sampler,
            tokenizer=self.tokenizer, task=t, label=f"task {t + 1}",
            gold_intent={r["ID"]: r["intent"] for r in valid_rows},
            bos_id=self.tokenizer.bos_id, eos_id=self.tokenizer.eos_id, pad_id=0,
            seed_base=hp["seed"] * 1_000_003 + t * 1009, lr_schedule=hp["lr_schedule"],
            decode_fn=functools.partial(decode, beam_size=1, max_len=hp["max_decode_len"]),
            train_logger=make_train_logger(hp, tdir / "train_log.txt", self.runner.out / "tensorboard" / tdir.name),
            train_log_path=tdir / "train_log.txt", epoch_times_path=tdir / "epoch_times.json",
            batch_hook=functools.partial(maybe_die, "train", t + 1),
        )  # fmt: skip
        brain.fit(
            counter, train_set, valid_ds, train_loader_kwargs=loader_kwargs,
            valid_loader_kwargs={"batch_size": hp["eval_batch_size"], "num_workers": hp["num_workers"]},
        )  # fmt: skip
        steps = brain.optimizer_step  # all of the task's (restored on a resume); the best checkpoint holds fewer

        best = checkpointer.recover_if_possible(max_key="select")
        if best is None:
            raise RuntimeError(f"{tdir / 'save'}: no checkpoint after training task {t + 1}")
        logger.info("task %d: best checkpoint %s (meta %s)", t + 1, best.path.name, best.meta)
        model = brain._model
        if if_main_process():
            atomic_torch_save(model.state_dict(), tdir / "best_model.ckpt")
        return model, {
            "best_checkpoint": dict(best.meta),
            "epoch_s": read_epoch_times(tdir / "epoch_times.json"),
            "targets_s": targets_s,
            "valid_scope": hp["valid_scope"],
            "n_valid": len(valid_rows),
            "optimizer_steps": steps,
            "data": self.data.report,
        }

    def distillation(self, t: int, model: torch.nn.Module, plugins: list[ContinualPlugin], kd_rows: list[dict]):
        """(the KD terms that run in task t, set up; the frozen teacher or None; its cached targets or None). KD runs
        from task 2 on when the row has active terms and items to apply them to; the teacher exists when a term or a
        plugin needs it."""
        hp = self.hp
        kd_terms = [term for term in hp["kd_terms"] + hp["extra_kd_terms"] if term.active]
        kd_on = t > 0 and bool(kd_terms) and bool(kd_rows)
        need_teacher = (kd_on and any(term.needs & TEACHER_NEEDS for term in kd_terms)) or (
            t > 0 and any(p.needs_teacher for p in plugins)
        )
        teacher = Teacher(model) if need_teacher else None
        if not kd_on:
            return [], teacher, None
        for term in kd_terms:
            term.setup(model.encoder_dim, model.encoder_dim)
        targets = None
        if teacher is not None and any("teacher_hyps" in term.needs for term in kd_terms):
            targets = self.teacher_targets(teacher, kd_rows, t)
        return kd_terms, teacher, targets

    def teacher_targets(self, teacher: Teacher, rows: list[dict], t: int) -> TeacherTargets:
        """The teacher's beam-search hypotheses of ``rows`` (the items KD applies to), decoded once per task and
        cached on disk by item data (:func:`slukd.train.targets.teacher_targets`, the one function of both recipes),
        in the precision the teacher was evaluated in."""
        hp = self.hp
        config = {"beam": hp["pseudo_beam_size"], "max_len": hp["max_decode_len"], "precision": hp["eval_precision"]}
        if hp["length_penalty"] is not None:  # (absent otherwise: caches made before the option stay valid)
            config["length_penalty"] = hp["length_penalty"]
        return teacher_targets(
            teacher, self.dataset(rows), {r["ID"]: audio_path(r, self.data.root) for r in rows},
            self.runner.task_dir(t) / "targets", config, beam_size=hp["pseudo_beam_size"],
            max_len=hp["max_decode_len"], precision=hp["eval_precision"], device=self.device,
            batch_size=hp["eval_batch_size"], hyps=True, emb=False,
            loading=(hp["sample_rate"], hp["max_audio_seconds"]),
            length_penalty=hp["length_penalty"], on_batch=functools.partial(maybe_die, "targets", t + 1),
        )  # fmt: skip

    # ---------------------------------------------------------------- evaluate after task t
    def evaluate(self, t: int, model: torch.nn.Module, dest: Path | None = None) -> dict | None:
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
            length_penalty=hp["length_penalty"], desc=f"test after task {t + 1}", progress=not hp["noprogressbar"],
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
