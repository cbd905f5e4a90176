"""KD methods as modules: each term declares what it needs from the teacher and computes its loss from a
:class:`KDContext`. Both recipes' Brains build the context and call the same terms (see
:class:`slukd.train.KDBrain`), so a new KD method is one class here (or anywhere) plus one YAML line::

    extra_kd_terms: [!new:mypackage.CosineKD {weight: 0.5}]

A term has a ``name`` (its key in logs and in the objective), a ``weight`` (0 = off) and ``needs``, a subset of
:data:`NEEDS`: ``teacher_enc`` (teacher encoder frames), ``teacher_emb`` (pooled teacher encoder output, cached
when the recipe caches embeddings), ``teacher_logits`` (teacher decoder on the gold prefix), ``teacher_hyps``
(teacher beam-search hypotheses, cached) and ``gold`` (the batch has reference targets: not audio-only data).
``setup(student_dim, teacher_dim, target_mean)`` is called once per training stage before the optimiser is built;
a term that owns trainable heads creates them there (the Brain then optimises, clips and checkpoints them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import nn

from slukd.distill.encoder import EncoderContrastive, EncoderMSE, masked_mean
from slukd.distill.sequence import seq_targets, sequence_nll
from slukd.distill.token import TokenKL

__all__ = ["NEEDS", "TEACHER_NEEDS", "KDContext", "KDTerm", "EncoderKD", "TokenKD", "SeqKD", "check_terms"]

NEEDS = frozenset({"teacher_enc", "teacher_emb", "teacher_logits", "teacher_hyps", "gold"})
#: what only a teacher gives (a term needing none of these runs without a teacher)
TEACHER_NEEDS = frozenset({"teacher_enc", "teacher_emb", "teacher_logits", "teacher_hyps"})


class KDContext:
    """What KD terms may use for one batch, restricted to the rows KD applies to (``rows`` [R] batch indices).

    Student side: ``student_enc`` [R, T, D], ``lens`` [R] (relative), ``student_logits`` [R, L, V] on the gold
    prefix (None for audio-only batches), ``gold_eos`` [R, L] and ``gold_lens`` [R], ``ids`` (R item IDs).
    ``student_decode(sel, tokens_bos)`` runs the student decoder on the encoder rows ``sel`` (indices into R).
    Teacher side (computed on first use, once per batch): ``teacher_enc`` [R, T', D'], ``teacher_emb`` [R, D'],
    ``teacher_logits`` [R, L, V], ``teacher_hyps`` (R token lists or None).
    ``hyps_as_gold``: the batch's targets ARE the teacher's hypotheses (audio-only clips), so the student logits on
    them already are what seq-KD needs (no second decoder pass) and no term may treat them as gold references.
    """

    def __init__(
        self,
        *,
        ids: Sequence[str],
        rows: torch.Tensor,
        wavs: torch.Tensor,
        wav_lens: torch.Tensor,
        enc: torch.Tensor,
        decode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        teacher: Any = None,
        targets: Any = None,
        logits: torch.Tensor | None = None,
        tokens_bos: torch.Tensor | None = None,
        tokens_eos: torch.Tensor | None = None,
        eos_lens: torch.Tensor | None = None,
        bos_id: int = 1,
        eos_id: int = 2,
        pad_id: int = 0,
        hyps_as_gold: bool = False,
    ) -> None:
        self.rows = rows
        self.ids = [str(ids[i]) for i in rows.tolist()]
        self._wavs, self._wav_lens, self._enc = wavs, wav_lens, enc
        self._decode, self.teacher, self.targets = decode, teacher, targets
        self._logits, self._bos, self._eos, self._eos_lens = logits, tokens_bos, tokens_eos, eos_lens
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.hyps_as_gold = bool(hyps_as_gold)

    @cached_property
    def lens(self) -> torch.Tensor:
        return self._wav_lens[self.rows]

    @cached_property
    def student_enc(self) -> torch.Tensor:
        return self._enc[self.rows]

    @cached_property
    def student_logits(self) -> torch.Tensor | None:
        return None if self._logits is None else self._logits[self.rows]

    @cached_property
    def gold_bos(self) -> torch.Tensor:
        return self._bos[self.rows]

    @cached_property
    def gold_eos(self) -> torch.Tensor:
        return self._eos[self.rows]

    @cached_property
    def gold_mask(self) -> torch.Tensor:
        """[R, L] True on the real target positions (tokens + eos), from the relative lengths."""
        length = self._eos.shape[1]
        n_valid = torch.round(self._eos_lens[self.rows] * length).long()
        return torch.arange(length, device=n_valid.device)[None, :] < n_valid[:, None]

    def student_decode(self, sel: torch.Tensor, tokens_bos: torch.Tensor) -> torch.Tensor:
        """Student decoder logits [N, L, V] for the KD rows ``sel`` (indices into the R rows) and prefixes."""
        rows = self.rows[sel]
        return self._decode(self._enc[rows], self._wav_lens[rows], tokens_bos)

    def _need_teacher(self, what: str) -> Any:
        if self.teacher is None:
            raise RuntimeError(f"a KD term needs {what} but the Brain has no teacher")
        return self.teacher

    @cached_property
    def teacher_enc(self) -> torch.Tensor:
        teacher = self._need_teacher("teacher_enc")
        wavs, lens = self._wavs[self.rows], self.lens
        return teacher.run(lambda m: m.encode(wavs, lens))

    @cached_property
    def teacher_emb(self) -> torch.Tensor:
        """Pooled teacher encoder output: from the cache when it holds embeddings, else masked_mean(teacher_enc)."""
        if self.targets is not None and self.targets.want_emb:
            return self.targets.emb_of(self.ids, device=self._enc.device)
        return masked_mean(self.teacher_enc.detach(), self.lens)

    @cached_property
    def teacher_logits(self) -> torch.Tensor:
        teacher, enc, lens, bos = self._need_teacher("teacher_logits"), self.teacher_enc, self.lens, self.gold_bos
        return teacher.run(lambda m: m.decode(enc, lens, bos))

    @cached_property
    def teacher_hyps(self) -> list[list[int] | None]:
        if self.targets is None or not self.targets.want_hyps:
            raise RuntimeError("a KD term needs teacher_hyps but no teacher-target cache with hypotheses is set")
        return self.targets.hyps_of(self.ids)


class KDTerm(nn.Module):
    """Base of a KD term (see the module docstring). Subclasses set ``name`` and ``needs`` and implement
    ``forward(ctx) -> scalar loss``."""

    name: str = "kd"
    needs: frozenset[str] = frozenset()

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.needs has unknown entries {sorted(unknown)} (known: {sorted(NEEDS)})"
            )

    @property
    def active(self) -> bool:
        return self.weight > 0

    def setup(self, student_dim: int, teacher_dim: int, target_mean: torch.Tensor | None = None) -> None:
        """Create fresh trainable heads, if the term has any (called once per training stage)."""

    def forward(self, ctx: KDContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}"


class EncoderKD(KDTerm):
    """Encoder-level KD ("audio-KD" in the SLU paper) on time-pooled encoder outputs.

    ``kind="mse"``: :class:`EncoderMSE` (the student mapped into the teacher's space, fixed teacher target);
    ``kind="contrastive"``: :class:`EncoderContrastive` (symmetric InfoNCE, other clips of the batch as negatives).
    """

    name = "enc"
    needs = frozenset({"teacher_emb"})

    def __init__(
        self,
        weight: float = 1.0,
        kind: str = "mse",
        proj_dim: int | None = None,
        temperature: float = 0.07,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__(weight)
        if kind not in ("mse", "contrastive"):
            raise ValueError(f"EncoderKD kind must be 'mse' or 'contrastive', got {kind!r}")
        self.kind, self.proj_dim = kind, proj_dim
        self.temperature, self.learn_temperature = float(temperature), bool(learn_temperature)
        self.loss_fn: nn.Module | None = None

    def setup(self, student_dim: int, teacher_dim: int, target_mean: torch.Tensor | None = None) -> None:
        if self.kind == "mse":
            self.loss_fn = EncoderMSE(student_dim, teacher_dim, proj_dim=None, target_mean=target_mean)
        else:
            proj = self.proj_dim if self.proj_dim is not None else max(student_dim, teacher_dim)
            self.loss_fn = EncoderContrastive(
                student_dim, teacher_dim, proj_dim=proj, temperature=self.temperature,
                learn_temperature=self.learn_temperature,
            )  # fmt: skip

    def forward(self, ctx: KDContext) -> torch.Tensor:
        if self.loss_fn is None:
            raise RuntimeError("EncoderKD.setup() must be called before the term is used")
        s, t = ctx.student_enc.float(), ctx.teacher_emb
        if self.kind == "contrastive":
            return self.loss_fn(s, t, student_lens=ctx.lens, ids=ctx.ids)
        return self.loss_fn(s, t, student_lens=ctx.lens)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind!r}"


class TokenKD(KDTerm):
    """Token-level KD: T² KL(p_teacher ‖ p_student) per real target position, both fed the gold prefix."""

    name = "tok"
    needs = frozenset({"teacher_logits", "gold"})

    def __init__(self, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__(weight)
        self.kl = TokenKL(temperature)

    def forward(self, ctx: KDContext) -> torch.Tensor:
        return self.kl(ctx.student_logits, ctx.teacher_logits, mask=ctx.gold_mask)


class SeqKD(KDTerm):
    """Sequence-level KD: cross-entropy of the student decoder on the teacher's beam-search hypotheses
    (``label_smoothing`` as for the gold target). Items without a hypothesis are left out; none gives 0."""

    name = "seq"
    needs = frozenset({"teacher_hyps"})

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        self.label_smoothing = float(label_smoothing)

    def forward(self, ctx: KDContext) -> torch.Tensor:
        if ctx.hyps_as_gold:  # audio-only clips: the batch targets are the teacher's hypotheses
            log_probs = torch.log_softmax(ctx.student_logits.float(), -1)
            lens = ctx._eos_lens[ctx.rows]
            return sequence_nll(log_probs, ctx.gold_eos, lens=lens, label_smoothing=self.label_smoothing)
        labels = ctx.teacher_hyps
        keep = [k for k, lab in enumerate(labels) if lab is not None]
        if not keep:
            return ctx.student_enc.new_zeros(())
        device = ctx.student_enc.device
        st = seq_targets([labels[k] for k in keep], ctx.bos_id, ctx.eos_id, ctx.pad_id, device=device)
        sel = torch.as_tensor(keep, dtype=torch.long, device=ctx.rows.device)
        logits = ctx.student_decode(sel, st.tokens_bos)
        log_probs = torch.log_softmax(logits.float(), -1)
        return sequence_nll(log_probs, st.tokens_eos, lens=st.lens, label_smoothing=self.label_smoothing)


def check_terms(terms: Sequence[KDTerm]) -> list[KDTerm]:
    """Validate a list of KD terms (``kd_terms`` + ``extra_kd_terms`` of the hparams): KDTerm instances with
    unique names. Returns the active ones (weight > 0), in order."""
    names: set[str] = set()
    for t in terms:
        if not isinstance(t, KDTerm):
            raise TypeError(f"KD terms must be slukd.distill.KDTerm instances, got {type(t).__name__}")
        if t.name in names:
            raise ValueError(f"two KD terms are named {t.name!r}; names must be unique")
        names.add(t.name)
    return [t for t in terms if t.active]
