"""KD overhead per training step on CPU: each KD method's step time as a ratio to the supervised step.

The student is ``slukd.models.seq2seq.Seq2Seq`` (Conformer encoder + transformer decoder + CTC head) on random
precomputed features; the teacher is a frozen copy of the same architecture (as in the SLU paper; pass
``--teacher-d-model`` for a wider one). One training step = forward, loss, backward, AdamW step:

    sup          attention CE + ctc_weight · CTC (the baseline)
    audio_mse    sup + teacher encoder forward (no grad) + EncoderMSE on pooled encoder outputs
    contrastive  sup + teacher encoder forward + EncoderContrastive (projections to --proj-dim)
    tok_kd       sup + teacher encoder + decoder forward on the gold prefix + TokenKL
    seq_kd       sup + a second student decoder pass + CE on pseudo-targets (precomputed once: beam search cost
                 is paid once per task/dataset, not per step, so it is not in the step)
    audio+seq    audio_mse and seq_kd together

KD terms cover every item of the batch (the captioning setting; SLU applies them to memory items only, which
costs the same teacher forward). After ``--warmup`` untimed steps per method, ``--repeats`` rounds of ``--steps``
batches are timed step by step, the methods interleaved on each batch (so load drifts on a shared machine hit all
of them alike); the figure is the median step time (ratio of medians), with the minimum as a second view.

    OMP_NUM_THREADS=1 python benchmarks/kd_overhead.py            # about a minute on one core
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from slukd.distill import EncoderContrastive, EncoderMSE, KDObjective, Teacher, TokenKL, seq_targets, sequence_nll
from slukd.models.seq2seq import Seq2Seq, count_parameters
from slukd.utils.run import seed_everything

METHODS = ("sup", "audio_mse", "contrastive", "tok_kd", "seq_kd", "audio+seq")


def build_model(args: argparse.Namespace, d_model: int) -> Seq2Seq:
    return Seq2Seq(
        args.vocab,
        n_mels=args.n_mels,
        d_model=d_model,
        nhead=4,
        num_encoder_layers=args.enc_layers,
        num_decoder_layers=args.dec_layers,
        d_ffn=4 * d_model,
        encoder_type="conformer",
    )


def random_batch(args: argparse.Namespace, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Features [B, T, n_mels], relative lengths [B], gold and pseudo token lists as SpeechBrain-style targets."""
    b, t = args.batch, args.frames
    feats = torch.randn(b, t, args.n_mels, generator=gen)
    lens = torch.linspace(1.0, 0.6, b)
    n_tok = torch.randint(args.tokens // 2, args.tokens + 1, (b,), generator=gen).tolist()
    gold = [torch.randint(3, args.vocab, (n,), generator=gen).tolist() for n in n_tok]
    pseudo = [torch.randint(3, args.vocab, (max(1, n - 2),), generator=gen).tolist() for n in n_tok]
    g, p = seq_targets(gold, 1, 2, 0), seq_targets(pseudo, 1, 2, 0)
    return {
        "feats": feats,
        "lens": lens,
        "gold_bos": g.tokens_bos,
        "gold_eos": g.tokens_eos,
        "gold_lens": g.lens,
        "gold": g.tokens,
        "gold_n": torch.tensor(n_tok),
        "pseudo_bos": p.tokens_bos,
        "pseudo_eos": p.tokens_eos,
        "pseudo_lens": p.lens,
    }


def make_step(method: str, student: Seq2Seq, teacher: Teacher, args: argparse.Namespace) -> Callable[[dict], float]:
    """A closure running one optimisation step of ``method`` on a batch; returns the loss."""
    d_s, d_t = student.encoder_dim, teacher.module.encoder_dim
    mse = EncoderMSE(d_s, d_t)  # the student mapped into the teacher space (identity when the dims agree)
    con = EncoderContrastive(d_s, d_t, proj_dim=args.proj_dim)
    tok = TokenKL(temperature=2.0)
    terms = {
        "sup": [],
        "audio_mse": ["audio"],
        "contrastive": ["contrastive"],
        "tok_kd": ["tok"],
        "seq_kd": ["seq"],
        "audio+seq": ["audio", "seq"],
    }[method]
    objective = KDObjective({k: 1.0 for k in terms}, mode="sum")
    params = list(student.parameters()) + list(mse.parameters()) + list(con.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step(batch: dict) -> float:
        feats, lens = batch["feats"], batch["lens"]
        enc = student.encode_features(feats, lens)
        logits = student.decode(enc, lens, batch["gold_bos"])
        sup = sequence_nll(F.log_softmax(logits.float(), -1), batch["gold_eos"], lens=batch["gold_lens"])
        if args.ctc_weight > 0:
            ctc_lp = student.ctc_log_probs(enc)  # [B, T', V]
            in_len = torch.round(lens * ctc_lp.shape[1]).long()
            ctc = F.ctc_loss(
                ctc_lp.transpose(0, 1), batch["gold"], in_len, batch["gold_n"], blank=0, zero_infinity=True
            )
            sup = (1 - args.ctc_weight) * sup + args.ctc_weight * ctc
        kd: dict[str, torch.Tensor] = {}
        if "audio" in terms or "contrastive" in terms or "tok" in terms:
            t_enc = teacher.run(lambda m: m.encode_features(feats, lens))
            if "audio" in terms:
                kd["audio"] = mse(enc, t_enc, lens, lens)
            if "contrastive" in terms:
                kd["contrastive"] = con(enc, t_enc, lens, lens)
            if "tok" in terms:
                t_logits = teacher.run(lambda m: m.decode(t_enc, lens, batch["gold_bos"]))
                mask = batch["gold_eos"] != 0
                kd["tok"] = tok(logits, t_logits, mask)
        if "seq" in terms:
            p_logits = student.decode(enc, lens, batch["pseudo_bos"])
            kd["seq"] = sequence_nll(
                F.log_softmax(p_logits.float(), -1), batch["pseudo_eos"], lens=batch["pseudo_lens"]
            )
        total, _ = objective(sup, kd)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return float(total.detach())

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300, help="feature frames per item (10 ms hop: 3 s)")
    parser.add_argument("--tokens", type=int, default=30, help="max target tokens per item")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--n_mels", "--n-mels", type=int, default=40)
    parser.add_argument("--d_model", "--d-model", type=int, default=144)
    parser.add_argument(
        "--teacher_d_model", "--teacher-d-model", type=int, default=None, help="default: same as the student"
    )
    parser.add_argument("--enc_layers", "--enc-layers", type=int, default=4)
    parser.add_argument("--dec_layers", "--dec-layers", type=int, default=2)
    parser.add_argument("--proj_dim", "--proj-dim", type=int, default=128)
    parser.add_argument("--ctc_weight", "--ctc-weight", type=float, default=0.3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "sup" not in methods:
        parser.error(f"--methods must include 'sup' and only use {METHODS}; got {methods}")

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    init = build_model(args, args.d_model)
    teacher = Teacher(build_model(args, args.teacher_d_model or args.d_model))
    gen = torch.Generator().manual_seed(args.seed)
    batches = [random_batch(args, gen) for _ in range(args.warmup + args.steps)]
    # every method trains its own copy of the same initial student, so all start from identical weights
    steps = {m: make_step(m, copy.deepcopy(init).train(), teacher, args) for m in methods}
    for m in methods:  # untimed warm-up (allocator, AdamW state)
        for b in batches[: args.warmup]:
            steps[m](b)
    # Timed steps are interleaved method by method, so load drifts on a shared machine hit every method alike.
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for b in batches[args.warmup :]:
            for m in methods:
                start = time.perf_counter()
                steps[m](b)
                times[m].append(time.perf_counter() - start)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(
        f"student {count_parameters(init) / 1e6:.2f}M params, teacher {count_parameters(teacher.module) / 1e6:.2f}M; "
        f"batch {args.batch} x {args.frames} frames, {args.tokens} tokens; torch {torch.__version__}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    n = args.repeats * args.steps
    print(f"{'method':<12} {'ms/step':>9} {'ratio':>7} {'min ms':>8} {'min ratio':>9}   (median / min of {n} steps)")
    low = {m: min(v) for m, v in times.items()}
    for m in methods:
        ratio, low_ratio = med[m] / med["sup"], low[m] / low["sup"]
        print(f"{m:<12} {1000 * med[m]:>9.1f} {ratio:>7.2f} {1000 * low[m]:>8.1f} {low_ratio:>9.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rec = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "ms_per_step": {m: 1000 * med[m] for m in methods},
            "ratio_to_sup": {m: med[m] / med["sup"] for m in methods},
            "min_ratio_to_sup": {m: low[m] / low["sup"] for m in methods},
            "steps_ms": {m: [1000 * t for t in v] for m, v in times.items()},
        }
        args.json.write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
