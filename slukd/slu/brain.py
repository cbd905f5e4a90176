"""The SLU student as a :class:`slukd.train.KDBrain`: supervised seq2seq (+CTC) loss, KD on the rehearsal memory.

Loss of a training batch with B items, of which the memory items M (``is_memory``):

    L_sup = w_ctc · CTC(enc, y) + (1 - w_ctc) · CE(decoder(enc, [bos]+y), y+[eos])      (pad positions masked)
    KD terms (teacher = frozen model after the previous task, run on the memory rows, or on every row with
    ``kd_scope: all``; slukd.distill.terms):
        enc (audio-KD): MSE(masked_mean(enc_s[M]), masked_mean(enc_t[M]))
        tok:   T² KL(p_t ‖ p_s) per target position of the memory rows (gold prefix)
        seq:   CE of the student decoder on the teacher's beam-search hypotheses of the memory rows
    L = (1 - alpha) · L_sup + alpha · Σ_k w_k L_k,  alpha = sqrt(|M| / B)      (KDObjective, mode "alpha")

Validation decodes greedily and measures intent accuracy on the validation items; the checkpoint kept as "best"
maximises ``select = acc - 1e-3 · loss`` (accuracy, ties broken by the lower loss).
"""

from __future__ import annotations

from typing import Any

import speechbrain as sb
import torch

from slukd.data.target import parse
from slukd.distill import sequence_nll
from slukd.train import KDBrain


def slu_forward(model: torch.nn.Module, batch: Any, ctc: bool = False) -> tuple[Any, dict[str, Any]]:
    """The student's teacher-forced pass on a batch already on its device: (model output, {enc [B, T, D], logits
    [B, L, V], lens [B], and ``ctc`` [B, T, V] log-probs when asked for and the model has a CTC head})."""
    wavs, lens = batch.sig
    res = model(wavs, lens, batch.tokens_bos[0])
    out = {"enc": res.enc, "logits": res.logits, "lens": lens}
    if ctc and res.ctc_log_probs is not None:
        out["ctc"] = res.ctc_log_probs
    return res, out


def slu_loss(out: dict[str, Any], batch: Any, ctc_weight: float, label_smoothing: float) -> torch.Tensor:
    """L_sup = w_ctc · CTC + (1 - w_ctc) · CE (CE alone when ``out`` has no ``ctc``); see the module docstring."""
    tokens_eos, eos_lens = batch.tokens_eos
    log_probs = torch.log_softmax(out["logits"].float(), dim=-1)
    ce = sequence_nll(log_probs, tokens_eos, lens=eos_lens, pad_index=None, label_smoothing=label_smoothing)
    if "ctc" not in out:
        return ce
    tokens, tok_lens = batch.tokens
    ctc = sb.nnet.losses.ctc_loss(out["ctc"], tokens, out["lens"], tok_lens, blank_index=0)
    return ctc_weight * ctc + (1 - ctc_weight) * ce


class SLUBrain(KDBrain):
    """Options besides :class:`KDBrain`'s: ``tokenizer``; ``task`` (0-based); ``decode_fn``
    (``(model, enc, lens) -> list[list[int]]``, greedy decoding for validation); ``gold_intent`` ({item ID: intent}
    of the validation items); ``kd_scope`` (``memory``: KD on the rehearsal-memory rows; ``all``: on every row)."""

    OPTIONS = KDBrain.OPTIONS | {"tokenizer", "task", "decode_fn", "gold_intent", "kd_scope"}
    tokenizer: Any = None
    task: int = 0
    decode_fn: Any = None
    gold_intent: dict[str, str] | None = None
    kd_scope: str = "memory"

    def compute_forward(self, batch: Any, stage: sb.Stage) -> dict[str, Any]:
        _, res, out = self.forward_student(batch)
        if self.hparams.ctc_weight > 0 and stage == sb.Stage.TRAIN and res.ctc_log_probs is not None:
            out["ctc"] = res.ctc_log_probs
        if stage == sb.Stage.VALID and self.decode_fn is not None:
            out["hyps"] = self.decode_fn(self._model, res.enc, out["lens"])
        return out

    def supervised_loss(self, out: dict[str, Any], batch: Any, stage: sb.Stage) -> torch.Tensor:
        return slu_loss(out, batch, self.hparams.ctc_weight, self.hparams.label_smoothing)

    def kd_rows(self, batch: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """KD applies to the rehearsal-memory rows (``kd_scope: memory``) or to every row (``all``); the memory's
        share of the batch sets alpha."""
        is_mem = batch.is_memory.bool()
        if self.kd_scope == "all":
            return torch.arange(len(is_mem), device=is_mem.device), is_mem
        if not bool(is_mem.any()):
            return None, None
        return torch.nonzero(is_mem).squeeze(1), is_mem

    # ------------------------------------------------------------------ validation
    def on_valid_start(self, stage: sb.Stage) -> None:
        self._valid_correct = 0
        self._valid_total = 0

    def on_valid_batch(self, predictions: dict[str, Any], batch: Any, stage: sb.Stage) -> None:
        if "hyps" not in predictions:
            return
        for item_id, hyp in zip(batch.id, predictions["hyps"]):
            pred = parse(self.tokenizer.decode(hyp)).intent
            self._valid_correct += int(pred == self.gold_intent[item_id])
            self._valid_total += 1

    def valid_stats(self) -> dict[str, float]:
        return {"intent_acc": self._valid_correct / self._valid_total if self._valid_total else 0.0}

    def log_meta(self) -> dict[str, Any]:
        return {"task": self.task + 1}

    def checkpoint_meta(self, stats: dict[str, float], epoch: int) -> dict[str, Any]:
        acc, loss = stats["intent_acc"], stats["loss"]
        return {
            "intent_acc": acc,
            "loss": loss,
            "select": acc - 1e-3 * loss,
            "epoch": epoch,
            "epoch_s": self.train_stats["epoch_s"],
        }
