"""The SLU student as a SpeechBrain ``Brain``: supervised seq2seq (+CTC) loss, rehearsal KD terms, validation.

Loss of a training batch with B items, of which the memory items M (``is_memory``):

    L_sup = w_ctc · CTC(enc, y) + (1 - w_ctc) · CE(decoder(enc, [bos]+y), y+[eos])      (pad positions masked)
    KD terms (teacher = frozen model after the previous task, run on the memory rows only):
        audio: MSE(masked_mean(enc_s[M]), masked_mean(enc_t[M]))
        tok:   T² KL(p_t ‖ p_s) per target position of the memory rows (gold prefix)
        seq:   CE of the student decoder on the teacher's beam-search hypotheses of the memory rows
    L = (1 - alpha) · L_sup + alpha · Σ_k w_k L_k,  alpha = sqrt(|M| / B)      (KDObjective, mode "alpha")

Validation decodes greedily and measures intent accuracy; the checkpoint kept as "best" maximises
``select = acc - 1e-3 · loss`` (accuracy, ties broken by the lower loss).

Determinism: at the start of every training epoch all RNGs are seeded from (seed, task, epoch) and the sampler's
epoch is set, so resuming from an end-of-epoch checkpoint reproduces an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch

from slukd.data.target import parse
from slukd.distill import seq_targets, sequence_nll
from slukd.utils.io import atomic_write_json, atomic_write_text
from slukd.utils.run import seed_everything

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"\bepoch: (\d+)\b")


class SLUBrain(sb.Brain):
    """Expected attributes besides ``modules.model`` (set by the task loop after construction):

    ``tokenizer``; ``task`` (0-based) and ``seed``; ``teacher`` (a :class:`slukd.distill.Teacher` or None);
    ``kd`` (:class:`slukd.distill.KDObjective` or None); ``audio_kd`` (EncoderMSE or None); ``tok_kd`` (TokenKL or
    None); ``pseudo`` ({item ID: token list}, the teacher's hypotheses of the memory); ``decode_fn``
    (``(model, enc, lens) -> list[list[int]]``, greedy decoding used for validation); ``gold_intent``
    ({item ID: intent}); ``sampler`` (the train sampler, whose epoch is set here).
    """

    tokenizer: Any = None
    task: int = 0
    seed: int = 0
    teacher: Any = None
    kd: Any = None
    audio_kd: Any = None
    tok_kd: Any = None
    pseudo: dict[str, list[int]] | None = None
    decode_fn: Any = None
    gold_intent: dict[str, str] | None = None
    sampler: Any = None
    train_logger: Any = None
    epoch_times_path: Any = None
    train_log_path: Any = None
    batch_hook: Any = None  # called with the number of training batches this process has run (fault injection)
    _n_batches: int = 0

    # ------------------------------------------------------------------ forward / loss
    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        tokens_bos, _ = batch.tokens_bos
        res = self.modules.model(wavs, lens, tokens_bos)  # forward() goes through the DDP wrapper when there is one
        out = {"enc": res.enc, "logits": res.logits, "lens": lens}
        if self.hparams.ctc_weight > 0 and stage == sb.Stage.TRAIN and res.ctc_log_probs is not None:
            out["ctc"] = res.ctc_log_probs
        if stage == sb.Stage.VALID and self.decode_fn is not None:
            out["hyps"] = self.decode_fn(self._model, res.enc, lens)
        return out

    @property
    def _model(self):
        """The student without its DDP wrapper (for decoding and the extra seq-KD decoder pass)."""
        m = self.modules.model
        return getattr(m, "module", m)

    def _supervised(self, out, batch):
        tokens_eos, eos_lens = batch.tokens_eos
        log_probs = torch.log_softmax(out["logits"].float(), dim=-1)
        ce = sequence_nll(
            log_probs, tokens_eos, lens=eos_lens, pad_index=None, label_smoothing=self.hparams.label_smoothing
        )
        if "ctc" not in out:
            return ce, {"ce": float(ce.detach())}
        tokens, tok_lens = batch.tokens
        ctc = sb.nnet.losses.ctc_loss(out["ctc"], tokens, out["lens"], tok_lens, blank_index=0)
        w = self.hparams.ctc_weight
        return w * ctc + (1 - w) * ce, {"ce": float(ce.detach()), "ctc": float(ctc.detach())}

    def compute_objectives(self, out, batch, stage):
        sup, parts = self._supervised(out, batch)
        if stage == sb.Stage.VALID:
            self._valid_loss_items += 1
            if "hyps" in out:
                for item_id, hyp in zip(batch.id, out["hyps"]):
                    pred = parse(self.tokenizer.decode(hyp)).intent
                    self._valid_correct += int(pred == self.gold_intent[item_id])
                    self._valid_total += 1
            return sup
        if stage != sb.Stage.TRAIN or self.kd is None or self.teacher is None:
            return sup
        is_mem = batch.is_memory.bool()
        if not bool(is_mem.any()):
            return sup
        rows = torch.nonzero(is_mem).squeeze(1)
        kd_terms: dict[str, torch.Tensor] = {}
        wavs, lens = batch.sig
        need_teacher = self.kd.active("audio") or self.kd.active("tok")
        if need_teacher:
            t_enc = self.teacher.run(lambda m: m.encode(wavs[rows], lens[rows]))
            if self.kd.active("audio"):
                kd_terms["audio"] = self.audio_kd(out["enc"][rows], t_enc, lens[rows], lens[rows])
            if self.kd.active("tok"):
                tokens_bos, _ = batch.tokens_bos
                tokens_eos, eos_lens = batch.tokens_eos
                t_logits = self.teacher.run(lambda m: m.decode(t_enc, lens[rows], tokens_bos[rows]))
                n_valid = torch.round(eos_lens[rows] * tokens_eos.shape[1]).long()
                mask = torch.arange(tokens_eos.shape[1], device=n_valid.device)[None, :] < n_valid[:, None]
                kd_terms["tok"] = self.tok_kd(out["logits"][rows], t_logits, mask=mask)
        if self.kd.active("seq"):
            ids = [batch.id[i] for i in rows.tolist()]
            labels = [self.pseudo.get(i) for i in ids] if self.pseudo else [None] * len(ids)
            keep = [k for k, lab in enumerate(labels) if lab is not None]
            if keep:
                st = seq_targets(
                    [labels[k] for k in keep], self.tokenizer.bos_id, self.tokenizer.eos_id, 0, device=self.device
                )
                sel = rows[keep]
                logits = self._model.decode(out["enc"][sel], lens[sel], st.tokens_bos)
                kd_terms["seq"] = sequence_nll(torch.log_softmax(logits.float(), -1), st.tokens_eos, lens=st.lens)
            else:
                kd_terms["seq"] = sup.new_zeros(())
        total, kd_parts = self.kd(sup, kd_terms, is_memory=is_mem)
        return total

    # ------------------------------------------------------------------ schedule, seeding, logging
    def on_fit_start(self):
        """SpeechBrain's start (optimiser, recovery of the latest checkpoint), then drop the train-log lines of
        epochs after the recovered one, so a resumed task's ``train_log.txt`` has each epoch once."""
        super().on_fit_start()
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

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        self._n_batches += 1
        if self.batch_hook is not None:
            self.batch_hook(self._n_batches)
        warm = max(1, int(self.hparams.warmup_steps))
        lr = self.hparams.lr * min(1.0, (self.optimizer_step + 1) / warm)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            seed_everything(self.seed * 1_000_003 + self.task * 1009 + int(epoch or 0))
            if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(int(epoch or 0))
            self._epoch_start = time.perf_counter()
        elif stage == sb.Stage.VALID:
            self._valid_correct = 0
            self._valid_total = 0
            self._valid_loss_items = 0

    def _record_epoch_time(self, epoch: int, seconds: float) -> None:
        """Keep {epoch: training seconds} in a JSON file (rewritten atomically; a resumed task keeps old epochs)."""
        path = Path(self.epoch_times_path)
        times = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        times[str(epoch)] = seconds
        atomic_write_json(path, times)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": float(stage_loss), "epoch_s": time.perf_counter() - self._epoch_start}
            if self.epoch_times_path is not None and sb.utils.distributed.if_main_process():
                self._record_epoch_time(int(epoch or 0), self.train_stats["epoch_s"])
            return
        if stage != sb.Stage.VALID:
            return
        acc = self._valid_correct / self._valid_total if self._valid_total else 0.0
        stats = {"loss": float(stage_loss), "intent_acc": acc}
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else 0.0
        logger.info(
            "task %d epoch %s: train loss %.4f (%.1f s), valid loss %.4f, valid intent acc %.2f%%, lr %.2e",
            self.task + 1,
            epoch,
            self.train_stats["loss"],
            self.train_stats["epoch_s"],
            stats["loss"],
            100 * acc,
            lr,
        )
        if self.train_logger is not None:
            self.train_logger.log_stats(
                stats_meta={"task": self.task + 1, "epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
        if self.checkpointer is not None:
            meta = {
                "intent_acc": acc,
                "loss": float(stage_loss),
                "select": acc - 1e-3 * float(stage_loss),
                "epoch": int(epoch),
                "epoch_s": self.train_stats["epoch_s"],
            }
            self.checkpointer.save_and_keep_only(meta=meta, max_keys=["select"], num_to_keep=1)
