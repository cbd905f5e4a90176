"""The captioner (teacher or student) as a :class:`slukd.train.KDBrain`.

Per training step, on a captioned batch (clip b, this epoch's reference y_b, encoder frames E = enc(x) [B, T', D]):

    L_sup = CE(decoder(E, [bos]+y), y+[eos])                         (pad-masked token mean, label smoothing)
    KD terms on every clip (slukd.distill.terms): seq (CE on the teacher's beam-3 caption), enc (EncoderMSE or
    EncoderContrastive on pooled clip embeddings, teacher side cached), tok (T² KL on the gold prefix)
    L = L_sup + Σ_k w_k L_k                                          (KDObjective, mode "sum")

With audio-only data, each step adds the loss of an audio-only batch: its clips' targets are the teacher's
pseudo-captions, and every term that needs no reference caption applies (Σ_k w_k L_k over seq and enc). The two
halves are back-propagated separately before one optimiser step (gradients add up; under DDP the first backward
runs without gradient synchronisation), so each forward pass goes through the DDP wrapper once.

Validation decodes every validation clip (greedy by default) and scores CIDEr-D over the whole split; validation
runs every ``valid_every`` epochs and at the last one. The checkpoint with the best validation CIDEr-D is kept
(besides the latest, for resuming).
"""

from __future__ import annotations

from typing import Any

import speechbrain as sb
import torch
from speechbrain.dataio.dataloader import make_dataloader

from slukd.distill import sequence_nll
from slukd.metrics.caption import caption_metrics
from slukd.train import KDBrain
from slukd.train.decode import decode
from slukd.utils.distributed import all_gather_objects


class CaptionBrain(KDBrain):
    """Options besides :class:`KDBrain`'s: ``vocab``; ``clock`` (:class:`slukd.captioning.data.EpochClock`);
    ``valid_refs`` ({clip ID: references}); ``valid_beam_size``, ``max_decode_len``; ``valid_every``;
    ``audio_only_set`` (dataset of pseudo-captioned audio-only clips, or None), ``audio_only_loader_kwargs`` and
    ``audio_only_durations``; ``batching`` (random | bucketed)."""

    OPTIONS = KDBrain.OPTIONS | {
        "vocab",
        "clock",
        "valid_refs",
        "valid_beam_size",
        "max_decode_len",
        "valid_every",
        "audio_only_set",
        "audio_only_loader_kwargs",
        "audio_only_durations",
        "batching",
    }
    select_key = "CIDEr_D"
    vocab: Any = None
    clock: Any = None
    valid_refs: dict[str, list[str]] | None = None
    valid_beam_size: int = 1
    max_decode_len: int = 22
    valid_every: int = 1
    audio_only_set: Any = None
    audio_only_loader_kwargs: dict[str, Any] = {}
    audio_only_durations: list[float] | None = None
    batching: str = "random"

    # ------------------------------------------------------------------ forward / losses
    def compute_forward(self, batch: Any, stage: sb.Stage) -> dict[str, Any]:
        _, res, out = self.forward_student(batch)
        if stage == sb.Stage.VALID:
            out["hyps"] = decode(self._model, res.enc, out["lens"], self.valid_beam_size, self.max_decode_len)
        return out

    def supervised_loss(self, out: dict[str, Any], batch: Any, stage: sb.Stage) -> torch.Tensor:
        tokens_eos, eos_lens = batch.tokens_eos
        log_probs = torch.log_softmax(out["logits"].float(), dim=-1)
        return sequence_nll(log_probs, tokens_eos, lens=eos_lens, label_smoothing=self.hparams.label_smoothing)

    def audio_only_loss(self, batch: Any) -> torch.Tensor:
        """Σ_k w_k L_k over the KD terms that need no reference caption, on an audio-only batch whose targets are
        the teacher's pseudo-captions."""
        batch, res, _ = self.forward_student(batch)
        wavs, lens = batch.sig
        tokens_bos, _ = batch.tokens_bos
        tokens_eos, eos_lens = batch.tokens_eos
        from slukd.distill import KDContext

        ctx = KDContext(
            ids=batch.id, rows=torch.arange(len(batch.id), device=self.device), wavs=wavs, wav_lens=lens,
            enc=res.enc, decode=self._model.decode, teacher=self.teacher, targets=self.targets, logits=res.logits,
            tokens_bos=tokens_bos, tokens_eos=tokens_eos, eos_lens=eos_lens, bos_id=self.bos_id,
            eos_id=self.eos_id, pad_id=self.pad_id, hyps_as_gold=True,
        )  # fmt: skip
        losses = self.kd_losses(ctx, gold=False)
        total = res.enc.new_zeros((), dtype=torch.float32)
        for name, value in losses.items():
            total = total + self.kd_objective.weights[name] * value
            self._parts[f"ao_{name}"] = self._parts.get(f"ao_{name}", 0.0) + float(value.detach())
        return total

    # ------------------------------------------------------------------ audio-only batches
    def _audio_only_batches(self, epoch: int):
        from slukd.train.sampling import train_loader

        loader, kwargs, sampler = train_loader(
            self.batching, self.audio_only_set, self.audio_only_durations or [0.0] * len(self.audio_only_set),
            self.audio_only_loader_kwargs["batch_size"], self.seed_base + 104729,
            self.audio_only_loader_kwargs.get("num_workers", 0),
        )  # fmt: skip
        if kwargs:  # random batching: SpeechBrain's sampler, split across processes under DDP
            if self.distributed_launch:
                kwargs["sampler"] = sb.dataio.sampler.DistributedSamplerWrapper(kwargs["sampler"], rank=self.rank)
            loader = make_dataloader(self.audio_only_set, **kwargs)
        round_ = 0
        while True:
            sampler.set_epoch(epoch * 1000 + round_)
            yield from loader
            round_ += 1  # the pool is smaller than the captioned set: start it again, reshuffled

    def fit_batch(self, batch: Any) -> torch.Tensor:
        if self.audio_only_set is None or self.kd_objective is None:
            return super().fit_batch(batch)
        self.on_fit_batch_start(batch, True)
        with self.no_sync(True):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            self.check_loss_isfinite(loss)
            self.scaler.scale(loss).backward()
        with self.training_ctx:
            ao_loss = self.audio_only_loss(next(self._ao_iter))
        self.check_loss_isfinite(ao_loss)
        self.scaler.scale(ao_loss).backward()
        self.optimizers_step()
        total = loss.detach() + ao_loss.detach()
        self.on_fit_batch_end(batch, outputs, total, True)
        return total.cpu()

    # ------------------------------------------------------------------ stages
    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        if stage == sb.Stage.TRAIN:
            if self.clock is not None:
                self.clock.epoch = int(epoch or 0)
            if self.audio_only_set is not None:
                self._ao_iter = iter(self._audio_only_batches(int(epoch or 0)))
        super().on_stage_start(stage, epoch)

    def _fit_valid(self, valid_set: Any, epoch: int, enable: bool) -> None:
        last = epoch == getattr(self, "_limit", epoch)
        if epoch % max(1, self.valid_every) == 0 or last:
            return super()._fit_valid(valid_set, epoch, enable)
        if self.checkpointer is not None:  # a resume point, never the best
            meta = {self.select_key: -1.0, "epoch": epoch, "validated": False}
            self.checkpointer.save_and_keep_only(meta=meta, max_keys=[self.select_key], num_to_keep=1)
        return None

    def fit(self, epoch_counter, *args, **kwargs):
        self._limit = getattr(epoch_counter, "limit", None)
        return super().fit(epoch_counter, *args, **kwargs)

    def on_valid_start(self, stage: sb.Stage) -> None:
        self._valid_preds: dict[str, str] = {}

    def on_valid_batch(self, predictions: dict[str, Any], batch: Any, stage: sb.Stage) -> None:
        for item_id, hyp in zip(batch.id, predictions["hyps"]):
            self._valid_preds[item_id] = self.vocab.decode(hyp)

    def valid_stats(self) -> dict[str, float]:
        preds = self._valid_preds
        if self.distributed_launch:
            preds = {k: v for p in all_gather_objects(preds) for k, v in p.items()}
        refs = {i: self.valid_refs[i] for i in preds}
        return {"CIDEr_D": caption_metrics(preds, refs, meteor=False)["CIDEr_D"]}

    def checkpoint_meta(self, stats: dict[str, float], epoch: int) -> dict[str, Any]:
        return {"CIDEr_D": stats["CIDEr_D"], "loss": stats["loss"], "epoch": epoch, "validated": True}
