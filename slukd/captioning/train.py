"""The resumable captioning training loop (teacher or student), with KD terms from :mod:`slukd.distill`.

Per step, on a captioned batch (clip b, chosen reference y_b, student encoder frames E = enc(x) [B, T', D]):

    L_sup = CE(decoder(E, y_<l), y_l)                                   (pad-masked token mean, label smoothing)
    L_seq = CE(decoder(E, ŷ_<l), ŷ_l)      ŷ = teacher beam-3 caption   (seq-KD, cached)
    L_enc = EncoderMSE or EncoderContrastive(E, e_teacher)               (pooled clip embeddings, cached)
    L_tok = T² KL(p_teacher(·|y_<l) ‖ p_student(·|y_<l))                (token-level KD, teacher run live)
    L = L_sup + Σ_k w_k L_k                                              (KDObjective, mode "sum")

and, with audio-only data, a second batch from the caption-free pool adds ``w_seq L_seq + w_enc L_enc`` of its own
(each step sums the labelled batch's loss and the audio-only batch's loss, as in the paper).

Checkpoints: ``stage_dir/ckpt.pt`` after every epoch (model, KD heads, optimiser, step, RNG state, history; written
atomically), ``stage_dir/best_model.pt`` at the best validation CIDEr-D. Data order and caption choice depend only
on (seed, epoch), and the torch RNG state is restored, so a run killed at any point and restarted with the same
command finishes with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slukd.captioning.data import ClipBatch, choose_captions, iterate_batches, num_batches
from slukd.data.captions import WordVocab
from slukd.distill import (
    EncoderContrastive,
    EncoderMSE,
    KDObjective,
    PseudoLabeler,
    Teacher,
    TokenKL,
    seq_targets,
    sequence_nll,
)
from slukd.models.seq2seq import Seq2Seq
from slukd.utils.io import atomic_write_json

logger = logging.getLogger(__name__)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lr_at(step: int, total: int, lr: float, warmup: int, final_ratio: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``final_ratio * lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


class KDSetup:
    """The KD side of a student stage: frozen teacher, cached targets and the loss modules.

    ``weights``: {"seq": w, "enc": w, "tok": w} (0 = off); ``enc_kind``: "mse" or "contrastive".
    """

    def __init__(
        self,
        weights: dict[str, float],
        teacher: Teacher | None = None,
        labeler: PseudoLabeler | None = None,
        embeddings: dict[str, torch.Tensor] | None = None,
        enc_kind: str = "contrastive",
        student_dim: int = 0,
        teacher_dim: int = 0,
        proj_dim: int = 256,
        temperature: float = 0.07,
        tok_temperature: float = 2.0,
    ) -> None:
        self.objective = KDObjective({k: float(v) for k, v in weights.items()}, mode="sum")
        self.teacher, self.labeler, self.embeddings = teacher, labeler, embeddings
        self.enc_loss: nn.Module | None = None
        if self.objective.active("enc"):
            if enc_kind == "mse":
                self.enc_loss = EncoderMSE(student_dim, teacher_dim, proj_dim=proj_dim)
            elif enc_kind == "contrastive":
                self.enc_loss = EncoderContrastive(student_dim, teacher_dim, proj_dim=proj_dim, temperature=temperature)
            else:
                raise ValueError(f"enc_kd must be 'mse' or 'contrastive', got {enc_kind!r}")
        self.tok_loss = TokenKL(tok_temperature) if self.objective.active("tok") else None
        if (self.objective.active("seq") or self.objective.active("enc")) and (labeler is None or embeddings is None):
            raise ValueError("seq/enc KD need the teacher's cached pseudo-captions and embeddings")
        if self.tok_loss is not None and teacher is None:
            raise ValueError("token-level KD needs the teacher")


class CaptionTrainer:
    """Train ``model`` for ``epochs`` epochs on captioned ``train_rows`` (+ ``audio_only_rows`` when KD is set)."""

    def __init__(
        self,
        model: Seq2Seq,
        vocab: WordVocab,
        stage_dir: str | os.PathLike,
        hp: dict[str, Any],
        kd: KDSetup | None = None,
        validate_fn: Callable[[Seq2Seq], float] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model, self.vocab, self.hp, self.kd = model, vocab, hp, kd
        self.device = torch.device(device)
        self.stage_dir = Path(stage_dir)
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self.validate_fn = validate_fn
        self.bf16 = bool(hp.get("bf16", False))
        self.model.to(self.device)
        params = list(model.parameters())
        if kd is not None and kd.enc_loss is not None:
            kd.enc_loss.to(self.device)
            params += list(kd.enc_loss.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.01))
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.best = {"cider": -1.0, "epoch": -1}
        self.train_seconds = 0.0

    # -- checkpoints -----------------------------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.stage_dir / "ckpt.pt"

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "enc_loss": None if self.kd is None or self.kd.enc_loss is None else self.kd.enc_loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": self.best,
            "train_seconds": self.train_seconds,
            "torch_rng": torch.get_rng_state(),
        }

    def resume(self) -> bool:
        """Load ``ckpt.pt`` when present; returns whether it did."""
        if not self.ckpt_path.is_file():
            return False
        try:
            state = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        except Exception as err:
            raise RuntimeError(
                f"{self.ckpt_path}: unreadable checkpoint ({err}); delete it to restart the stage"
            ) from err
        self.model.load_state_dict(state["model"])
        if state["enc_loss"] is not None and self.kd is not None and self.kd.enc_loss is not None:
            self.kd.enc_loss.load_state_dict(state["enc_loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history, self.best = state["history"], state["best"]
        self.train_seconds = state.get("train_seconds", 0.0)
        torch.set_rng_state(state["torch_rng"].cpu())
        logger.info("resumed %s at epoch %d (step %d)", self.stage_dir, self.epoch, self.step)
        return True

    # -- losses ----------------------------------------------------------------------------------------------------
    def _ce(self, enc: torch.Tensor, lens: torch.Tensor, token_lists: list[list[int]]) -> tuple[torch.Tensor, Any]:
        t = seq_targets(token_lists, self.vocab.bos_id, self.vocab.eos_id, self.vocab.pad_id, device=self.device)
        logits = self.model.decode(enc, lens, t.tokens_bos)
        nll = sequence_nll(
            torch.log_softmax(logits.float(), dim=-1),
            t.tokens_eos,
            pad_index=self.vocab.pad_id,
            label_smoothing=self.hp.get("label_smoothing", 0.0),
        )
        return nll, (t, logits)

    def _pseudo(self, ids: list[str]) -> list[list[int]]:
        return [list(x) for x in self.kd.labeler.get(ids)]

    def _enc_kd(self, enc: torch.Tensor, lens: torch.Tensor, ids: list[str]) -> torch.Tensor:
        t_emb = torch.stack([self.kd.embeddings[i] for i in ids]).to(self.device)
        if isinstance(self.kd.enc_loss, EncoderContrastive):
            return self.kd.enc_loss(enc.float(), t_emb, student_lens=lens, ids=ids)
        return self.kd.enc_loss(enc.float(), t_emb, student_lens=lens)

    def loss(self, batch: ClipBatch, audio_only: ClipBatch | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss of one step and its parts (floats)."""
        b = batch.to(self.device)
        caps = choose_captions(batch, self.hp["seed"], self.epoch)
        gold = [self.vocab.encode(c, add_eos=False) for c in caps]
        with _autocast(self.device, self.bf16):
            enc = self.model.encode(b.wavs, b.wav_lens)
            sup, (targets, logits) = self._ce(enc, b.wav_lens, gold)
            terms: dict[str, torch.Tensor] = {}
            if self.kd is not None:
                obj = self.kd.objective
                if obj.active("seq"):
                    terms["seq"] = self._ce(enc, b.wav_lens, self._pseudo(batch.ids))[0]
                if obj.active("enc"):
                    terms["enc"] = self._enc_kd(enc, b.wav_lens, batch.ids)
                if obj.active("tok"):
                    t_logits = self.kd.teacher.run(
                        lambda m: m.decode(m.encode(b.wavs, b.wav_lens), b.wav_lens, targets.tokens_bos)
                    )
                    mask = targets.tokens_eos != self.vocab.pad_id
                    terms["tok"] = self.kd.tok_loss(logits.float(), t_logits.float(), mask=mask)
        if self.kd is None:
            return sup, {"sup": float(sup.detach()), "total": float(sup.detach())}
        total, parts = self.kd.objective(sup, terms)
        if audio_only is not None:
            a = audio_only.to(self.device)
            obj = self.kd.objective
            with _autocast(self.device, self.bf16):
                enc_a = self.model.encode(a.wavs, a.wav_lens)
                extra = enc_a.new_zeros((), dtype=torch.float32)
                if obj.active("seq"):
                    seq_a = self._ce(enc_a, a.wav_lens, self._pseudo(audio_only.ids))[0]
                    extra = extra + obj.weights["seq"] * seq_a
                    parts["ao_seq"] = float(seq_a.detach())
                if obj.active("enc"):
                    enc_kd_a = self._enc_kd(enc_a, a.wav_lens, audio_only.ids)
                    extra = extra + obj.weights["enc"] * enc_kd_a
                    parts["ao_enc"] = float(enc_kd_a.detach())
            total = total + extra
            parts["total"] = float(total.detach())
        return total, parts

    # -- loop ------------------------------------------------------------------------------------------------------
    def fit(self, train_rows: list[dict[str, Any]], audio_only_rows: list[dict[str, Any]] | None = None) -> dict:
        hp = self.hp
        epochs, bs = int(hp["epochs"]), int(hp["batch_size"])
        per_epoch = num_batches(len(train_rows), bs)
        total_steps = epochs * per_epoch
        use_ao = bool(audio_only_rows) and self.kd is not None
        self.resume()
        while self.epoch < epochs:
            self.model.train()
            t0 = time.monotonic()
            sums: dict[str, float] = {}
            ao_iter = None
            if use_ao:
                ao_iter = iterate_batches(
                    audio_only_rows, hp.get("audio_only_batch_size", bs), hp["seed"] + 1, self.epoch
                )
            n = 0
            for batch in iterate_batches(train_rows, bs, hp["seed"], self.epoch, max_seconds=hp.get("max_seconds")):
                ao = None
                if ao_iter is not None:
                    ao = next(ao_iter, None)
                    if ao is None:  # the pool is smaller than the captioned set: start it again
                        ao_iter = iterate_batches(
                            audio_only_rows, hp.get("audio_only_batch_size", bs), hp["seed"] + 1, self.epoch + 10_000
                        )
                        ao = next(ao_iter)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr_at(self.step, total_steps, hp["lr"], hp.get("warmup_steps", 100))
                loss, parts = self.loss(batch, ao)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at epoch {self.epoch} step {self.step}: {parts}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), hp.get("grad_clip", 5.0))
                self.optimizer.step()
                self.step += 1
                n += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                if n % int(hp.get("log_every", 25)) == 0:
                    logger.info(
                        "epoch %d step %d/%d: loss %.4f (%.2f s/step)",
                        self.epoch + 1, n, per_epoch, sums["total"] / n, (time.monotonic() - t0) / n,
                    )  # fmt: skip
            self.train_seconds += time.monotonic() - t0
            self.epoch += 1
            row = {"epoch": self.epoch, "step": self.step, "train_minutes": round(self.train_seconds / 60, 2)}
            row.update({f"loss_{k}": round(v / max(n, 1), 4) for k, v in sums.items()})
            every = int(hp.get("valid_every", 1))
            if self.validate_fn is not None and (self.epoch % every == 0 or self.epoch == epochs):
                self.model.eval()
                cider = float(self.validate_fn(self.model))
                row["valid_CIDEr_D"] = round(cider, 4)
                if cider > self.best["cider"]:
                    self.best = {"cider": cider, "epoch": self.epoch}
                    atomic_torch_save(self.model.state_dict(), self.stage_dir / "best_model.pt")
            self.history.append(row)
            logger.info("%s epoch %d: %s", self.stage_dir.name, self.epoch, row)
            atomic_torch_save(self._state(), self.ckpt_path)
            atomic_write_json(self.stage_dir / "history.json", self.history)
        if not (self.stage_dir / "best_model.pt").is_file():
            atomic_torch_save(self.model.state_dict(), self.stage_dir / "best_model.pt")
        return {"epochs": self.epoch, "steps": self.step, "train_minutes": round(self.train_seconds / 60, 2)}
