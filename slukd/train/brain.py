"""``KDBrain``: the SpeechBrain ``Brain`` both recipes train with (SLU: :class:`slukd.slu.SLUBrain`; captioning:
:class:`slukd.captioning.CaptionBrain`).

Loss of a training batch: ``L = objective(L_sup, {term.name: term(ctx)})`` where ``L_sup`` is the subclass's
supervised loss, the terms are the active :class:`slukd.distill.KDTerm` modules and ``ctx`` a
:class:`slukd.distill.KDContext` over the rows KD applies to (:meth:`kd_rows`: every row for captioning, the
rehearsal-memory rows for SLU). The objective is :class:`slukd.distill.KDObjective` (``kd_mode``: ``alpha``, the SLU
paper's L = (1-α) L_sup + α Σ_k w_k L_k with α = sqrt(n_mem / B), or ``sum``, L = L_sup + Σ_k w_k L_k).

What the base class adds to SpeechBrain's:
- the teacher is frozen and kept outside ``modules`` (never optimised or DDP-wrapped); KD terms with trainable heads
  are registered as ``modules["kd_<name>"]``, so they are optimised, gradient-clipped, DDP-wrapped and checkpointed
  with the student; a term that needs nothing from a teacher runs without one;
- the continual plugins (:mod:`slukd.continual.plugin`) add their ``batch_loss`` to every training batch's loss
  (logged as ``cl_<name>``) and see the gradients in ``before_step`` (after backward, before clipping and the step);
- gradient clipping (``max_grad_norm``) covers every parameter group (SpeechBrain clips only the first);
- the learning rate follows ``lr_schedule`` (:mod:`slukd.train.schedulers`) as a function of the optimiser step;
- at the start of every training epoch all RNGs are seeded from ``seed_base + epoch`` and the sampler's epoch is
  set, so resuming from an end-of-epoch checkpoint reproduces an uninterrupted run;
- the mean of every loss part (supervised, each KD term, α) per epoch goes to the log and ``train_log.txt``;
- validation statistics come from the subclass (:meth:`valid_stats`); the checkpoint with the highest
  ``checkpoint_meta()[select_key]`` is kept besides the latest.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch

from slukd.distill import TEACHER_NEEDS, KDContext, KDObjective, KDTerm, check_terms
from slukd.train.schedulers import apply_schedule
from slukd.utils.io import atomic_write_json, atomic_write_text
from slukd.utils.run import seed_everything

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"\bepoch: (\d+)\b")


class KDBrain(sb.Brain):
    """SpeechBrain Brain with distillation from a frozen teacher (see the module docstring).

    Extra arguments: ``teacher`` (:class:`slukd.distill.Teacher` or None: no KD), ``kd_terms`` (KD terms, already
    ``setup()``; inactive ones and, without a teacher, all of them are dropped), ``kd_mode`` and ``targets``
    (:class:`slukd.distill.TeacherTargets` with cached hypotheses/embeddings, or None).

    Options (keyword arguments of the constructor, :data:`OPTIONS`; a subclass adds its own): ``seed_base`` (epoch
    RNG seed offset), ``sampler`` (train sampler), ``lr_schedule`` (a :class:`slukd.train.schedulers.Schedule`),
    ``train_logger``, ``train_log_path``, ``epoch_times_path``, ``batch_hook`` (called with the number of training
    batches run by this process: fault injection), ``label`` (the log prefix, e.g. ``"task 2"``), ``bos_id`` /
    ``eos_id`` / ``pad_id`` (decoder special tokens), ``plugins`` (continual methods with training hooks).
    Subclasses implement :meth:`compute_forward` (a dict with at least ``enc`` [B, T, D], ``logits`` [B, L, V] and
    ``lens`` [B]) and :meth:`supervised_loss`, and may override :meth:`kd_rows`, :meth:`on_valid_batch`,
    :meth:`valid_stats` and :meth:`checkpoint_meta`.
    """

    OPTIONS = frozenset({"seed_base", "sampler", "lr_schedule", "train_logger", "train_log_path", "epoch_times_path",
                         "batch_hook", "label", "bos_id", "eos_id", "pad_id", "plugins"})  # fmt: skip
    select_key = "select"
    plugins: Sequence[Any] = ()
    seed_base: int = 0
    sampler: Any = None
    lr_schedule: Any = None
    train_logger: Any = None
    train_log_path: Any = None
    epoch_times_path: Any = None
    batch_hook: Any = None
    label: str = ""
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 0

    def __init__(
        self,
        modules: dict[str, torch.nn.Module],
        opt_class: Any = None,
        hparams: dict[str, Any] | None = None,
        run_opts: Any = None,
        checkpointer: Any = None,
        *,
        teacher: Any = None,
        kd_terms: Sequence[KDTerm] = (),
        kd_mode: str = "sum",
        targets: Any = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - self.OPTIONS)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown options {unknown} (known: {sorted(self.OPTIONS)})")
        active = [t for t in check_terms(list(kd_terms)) if teacher is not None or not (t.needs & TEACHER_NEEDS)]
        modules = dict(modules)
        self.kd_modules: dict[str, str] = {}  # term name -> modules key, for terms with trainable heads
        for term in active:
            if any(True for _ in term.parameters()):
                key = f"kd_{term.name}"
                modules[key] = term
                self.kd_modules[term.name] = key
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        self.teacher = teacher.to(self.device) if teacher is not None else None
        self.kd_terms = active
        self.kd_objective = KDObjective({t.name: t.weight for t in active}, mode=kd_mode) if active else None
        self.targets = targets
        if checkpointer is not None:
            for key in self.kd_modules.values():
                checkpointer.add_recoverable(key, self.modules[key])
        for key, value in options.items():
            setattr(self, key, value)
        self._n_batches = 0
        self._parts: dict[str, float] = {}
        self._parts_n = 0

    # ------------------------------------------------------------------ model access
    @property
    def _model(self) -> torch.nn.Module:
        """The student without its DDP wrapper (for decoding and the extra decoder passes of seq-KD)."""
        m = self.modules.model
        return getattr(m, "module", m)

    def forward_student(self, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        """The student's teacher-forced pass, through its DDP wrapper when there is one. Returns (the batch on the
        device, the model output, {enc [B, T', D], logits [B, L, V], lens [B]})."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        tokens_bos, _ = batch.tokens_bos
        res = self.modules.model(wavs, lens, tokens_bos)
        return batch, res, {"enc": res.enc, "logits": res.logits, "lens": lens}

    # ------------------------------------------------------------------ losses
    def supervised_loss(self, out: dict[str, Any], batch: Any, stage: sb.Stage) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def kd_rows(self, batch: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(rows KD applies to [R], memory mask [B] for alpha weighting or None). Default: every row."""
        n = len(batch.id)
        return torch.arange(n, device=self.device), None

    def kd_context(self, out: dict[str, Any], batch: Any, rows: torch.Tensor) -> KDContext:
        """The KD context of a batch with SpeechBrain's fields (``id``, ``sig``, ``tokens_bos``, ``tokens_eos``)."""
        wavs, lens = batch.sig
        gold = hasattr(batch, "tokens_bos") and out.get("logits") is not None
        tokens_bos = batch.tokens_bos[0] if gold else None
        tokens_eos, eos_lens = batch.tokens_eos if gold else (None, None)
        return KDContext(
            ids=batch.id, rows=rows, wavs=wavs, wav_lens=lens, enc=out["enc"], decode=self._model.decode,
            teacher=self.teacher, targets=self.targets, logits=out.get("logits") if gold else None,
            tokens_bos=tokens_bos, tokens_eos=tokens_eos, eos_lens=eos_lens,
            bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id,
        )  # fmt: skip

    def kd_losses(self, ctx: KDContext, gold: bool = True) -> dict[str, torch.Tensor]:
        """{name: loss} of the active terms (without ``gold``: only the terms that need no reference target)."""
        out = {}
        for term in self.kd_terms:
            if not gold and "gold" in term.needs:
                continue
            key = self.kd_modules.get(term.name)
            out[term.name] = (self.modules[key] if key else term)(ctx)
        return out

    def compute_objectives(self, predictions: dict[str, Any], batch: Any, stage: sb.Stage) -> torch.Tensor:
        sup = self.supervised_loss(predictions, batch, stage)
        if stage != sb.Stage.TRAIN:
            self.on_valid_batch(predictions, batch, stage)
            return sup
        total, parts = self.distilled_loss(sup, predictions, batch)
        for plugin in self.plugins:
            extra = plugin.batch_loss(self, batch, predictions)
            if extra is not None:
                total = total + extra
                parts[f"cl_{plugin.name}"] = float(extra.detach())
        self._accumulate(parts)
        return total

    def distilled_loss(self, sup: torch.Tensor, out: dict[str, Any], batch: Any) -> tuple[torch.Tensor, dict]:
        """(the KD objective's loss, its parts) of a training batch; ``sup`` alone without KD rows or terms."""
        if self.kd_objective is None:
            return sup, {"sup": float(sup.detach())}
        rows, is_memory = self.kd_rows(batch)
        if rows is None or rows.numel() == 0:
            return sup, {"sup": float(sup.detach())}
        ctx = self.kd_context(out, batch, rows)
        return self.kd_objective(sup, self.kd_losses(ctx), is_memory=is_memory)

    def _accumulate(self, parts: dict[str, float]) -> None:
        for k, v in parts.items():
            self._parts[k] = self._parts.get(k, 0.0) + float(v)
        self._parts_n += 1

    # ------------------------------------------------------------------ set-up
    def _wrap_distributed(self) -> None:
        """SpeechBrain's DDP wrapping, except that on the CPU BatchNorm layers stay per-process (SyncBatchNorm
        needs CUDA; SpeechBrain would fail on any model with BatchNorm, e.g. the CNN caption student)."""
        if not self.distributed_launch or self.device_type == "cuda":
            return super()._wrap_distributed()
        from torch.nn.parallel import DistributedDataParallel as DDP

        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DDP(module, device_ids=None, find_unused_parameters=self.find_unused_parameters)
        return None

    # ------------------------------------------------------------------ optimisation
    def init_optimizers(self) -> None:
        """SpeechBrain's single optimiser, with its own learning rate for a pretrained encoder when the hparams set
        ``encoder_lr`` (param groups: the encoder at ``encoder_lr``; the rest of the model and the KD heads at the
        optimiser's ``lr``)."""
        encoder_lr = getattr(self.hparams, "encoder_lr", None)
        if encoder_lr is None or self.opt_class is None:
            return super().init_optimizers()
        model = self._model
        enc = {id(p) for p in model.encoder.parameters()}
        enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
        rest = [p for p in self.modules.parameters() if p.requires_grad and id(p) not in enc]
        groups = [{"params": rest}] + ([{"params": enc_params, "lr": float(encoder_lr)}] if enc_params else [])
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)
        return None

    def optimizers_step(self) -> None:
        """SpeechBrain's optimiser step, with gradient clipping over every parameter of every group."""
        if self.optimizers_dict is not None:
            optimizers = self.freeze_optimizers(self.optimizers_dict)
        elif self.opt_class is not None:
            optimizers = {"optimizer": self.optimizer}
        else:
            return
        for opt in optimizers.values():
            self.scaler.unscale_(opt)
        for plugin in self.plugins:
            plugin.before_step(self)
        for opt in optimizers.values():
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if not self.scaler.is_enabled() and self.skip_nonfinite_grads:
            self.check_gradients()
        for opt in optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    def _set_lr(self) -> float:
        if self.lr_schedule is None or getattr(self, "optimizer", None) is None:
            return self.optimizer.param_groups[0]["lr"] if getattr(self, "optimizer", None) is not None else 0.0
        return apply_schedule(self.lr_schedule, self.optimizer, self.optimizer_step)

    def on_fit_batch_end(self, batch: Any, outputs: Any, loss: torch.Tensor, should_step: bool) -> None:
        self._n_batches += 1
        if self.batch_hook is not None:
            self.batch_hook(self._n_batches)
        self._set_lr()

    # ------------------------------------------------------------------ stages
    def on_fit_start(self) -> None:
        """SpeechBrain's start (optimiser, recovery of the latest checkpoint), then drop the train-log lines of
        epochs after the recovered one, so a resumed run's ``train_log.txt`` has each epoch once."""
        super().on_fit_start()
        self._set_lr()  # the schedule's value for the next step (the first one too, not the optimiser's base lr)
        path = Path(self.train_log_path) if self.train_log_path is not None else None
        if path is None or not path.is_file() or not sb.utils.distributed.if_main_process():
            return
        counter = next((o for o in self.checkpointer.recoverables.values() if hasattr(o, "current")), None)
        last = int(counter.current) if counter is not None else 0
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [ln for ln in lines if (m := _EPOCH_RE.search(ln)) is None or int(m.group(1)) <= last]
        if len(keep) != len(lines):
            logger.info(
                "train log: %d lines of epochs after epoch %d dropped (resumed run)", len(lines) - len(keep), last
            )
            atomic_write_text(path, "".join(keep))

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        if stage == sb.Stage.TRAIN:
            seed_everything(self.seed_base + int(epoch or 0))
            if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(int(epoch or 0))
            self._epoch_start = time.perf_counter()
            self._parts, self._parts_n = {}, 0
        else:
            self.on_valid_start(stage)

    def _record_epoch_time(self, epoch: int, seconds: float) -> None:
        """Keep {epoch: training seconds} in a JSON file (rewritten atomically; a resumed run keeps old epochs; read
        back with :func:`read_epoch_times`)."""
        path = Path(self.epoch_times_path)
        times = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        times[str(epoch)] = seconds
        atomic_write_json(path, times)

    def on_stage_end(self, stage: sb.Stage, stage_loss: float, epoch: int | None = None) -> None:
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": float(stage_loss), "epoch_s": time.perf_counter() - self._epoch_start}
            n = max(1, self._parts_n)
            self.train_stats.update({k: v / n for k, v in self._parts.items() if k not in ("total",)})
            if self.epoch_times_path is not None and sb.utils.distributed.if_main_process():
                self._record_epoch_time(int(epoch or 0), self.train_stats["epoch_s"])
            return
        if stage != sb.Stage.VALID:
            return
        stats = {"loss": float(stage_loss), **self.valid_stats()}
        lr = self.optimizer.param_groups[0]["lr"] if getattr(self, "optimizer", None) is not None else 0.0
        kd = ", ".join(f"{k} {v:.4f}" for k, v in self.train_stats.items() if k.startswith("kd_") or k == "alpha")
        logger.info(
            "%sepoch %s: train loss %.4f (%.1f s)%s, valid %s, lr %.2e",
            f"{self.label} " if self.label else "",
            epoch,
            self.train_stats["loss"],
            self.train_stats["epoch_s"],
            f" [{kd}]" if kd else "",
            ", ".join(f"{k} {v:.4f}" for k, v in stats.items()),
            lr,
        )
        if self.train_logger is not None:
            self.train_logger.log_stats(
                stats_meta={**self.log_meta(), "epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
        if self.checkpointer is not None:
            meta = self.checkpoint_meta(stats, int(epoch))
            self.checkpointer.save_and_keep_only(meta=meta, max_keys=[self.select_key], num_to_keep=1)

    # ------------------------------------------------------------------ subclass hooks
    def on_valid_start(self, stage: sb.Stage) -> None:
        """Reset the validation accumulators."""

    def on_valid_batch(self, predictions: dict[str, Any], batch: Any, stage: sb.Stage) -> None:
        """Accumulate validation statistics of one batch."""

    def valid_stats(self) -> dict[str, float]:
        """Validation statistics of the epoch (besides the loss)."""
        return {}

    def log_meta(self) -> dict[str, Any]:
        """Extra fields of the train-log line (e.g. the task)."""
        return {}

    def checkpoint_meta(self, stats: dict[str, float], epoch: int) -> dict[str, Any]:
        """Metadata stored with the epoch's checkpoint; ``select_key`` picks the best one."""
        return {self.select_key: -stats["loss"], "epoch": epoch, "epoch_s": self.train_stats["epoch_s"]}


def read_epoch_times(path: str | Path) -> list[float]:
    """The training seconds of each epoch, in epoch order, from the file ``KDBrain`` keeps (``epoch_times_path``);
    [] when there is none."""
    path = Path(path)
    times = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return [times[k] for k in sorted(times, key=int) if times[k] is not None]


class _Loggers:
    """Several SpeechBrain train loggers as one (``log_stats`` goes to each)."""

    def __init__(self, loggers: Sequence[Any]) -> None:
        self.loggers = list(loggers)

    def log_stats(self, *args: Any, **kwargs: Any) -> None:
        for lg in self.loggers:
            lg.log_stats(*args, **kwargs)


def make_train_logger(hparams: dict[str, Any], save_file: str | Path, tensorboard_dir: str | Path | None = None):
    """The hparams' ``train_logger`` writing ``save_file``; with ``tensorboard: true`` also SpeechBrain's
    TensorboardLogger into ``tensorboard_dir`` (needs ``pip install slukd[tensorboard]``)."""
    file_logger = hparams["train_logger"](save_file=str(save_file))
    if not hparams.get("tensorboard"):
        return file_logger
    try:
        from speechbrain.utils.train_logger import TensorboardLogger

        tb = TensorboardLogger(save_dir=str(tensorboard_dir or Path(save_file).parent / "tensorboard"))
    except ImportError as err:
        raise ImportError("tensorboard: true needs the tensorboard package (pip install 'slukd[tensorboard]')") from err
    return _Loggers([file_logger, tb])
