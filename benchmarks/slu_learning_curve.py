"""Learning curve of the default CPU SLU model on the built-in demo corpus (SLURP-3, first task).

Synthesises (or reuses) the corpus, prepares manifests, trains a SentencePiece tokenizer on all training targets,
then trains ``slukd.models.Seq2Seq`` (the recipe's default CPU model) on the train sentences of the task's
scenarios with a minimal loop:

    L = w_ctc * CTC(enc, y) + (1 - w_ctc) * CE_ls(decoder(enc, [bos] + y), y + [eos])     (pad masked)

Adam, linear warm-up then constant lr, fp32 (``--bf16`` for bf16 autocast: on this VM's AMD EPYC, which has
avx512_bf16 but no AMX, oneDNN spends 13-20 s building kernels for every new input shape, so bf16 with variable
lengths is far slower than fp32), length-bucketed batches. Every ``--eval-every`` seconds of
training (evaluation time excluded) it greedy-decodes the task's test recordings (held-out sentences) and prints
training minutes, steps, epochs, intent accuracy and transcript WER.

    OMP_NUM_THREADS=2 python benchmarks/slu_learning_curve.py --minutes 5
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slukd.data.slurp import prepare_slurp, read_manifest  # noqa: E402
from slukd.data.synth_slu import synthesize_slu_corpus  # noqa: E402
from slukd.data.target import ParseStats, parse, special_tokens  # noqa: E402
from slukd.data.tokenizer import train_tokenizer  # noqa: E402

logger = logging.getLogger("slu_learning_curve")
TASK1 = ["calendar", "email", "general", "play", "qa", "social"]


def load_rows(rows: list[dict], data_root: str, tok) -> list[dict]:
    out = []
    for r in rows:
        wav, sr = sf.read(r["wav"].replace("$data_root", data_root), dtype="float32")
        assert sr == 16000, r["wav"]
        out.append(
            {**r, "audio": torch.from_numpy(wav), "tokens": tok.encode(r["target"]), "ctc": tok.encode(r["transcript"])}
        )
    return out


def batches(items: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffle, sort within buckets of 8 batches by length, split, shuffle the batches."""
    idx = list(range(len(items)))
    rng.shuffle(idx)
    out = []
    bucket = batch_size * 8
    for i in range(0, len(idx), bucket):
        chunk = sorted(idx[i : i + bucket], key=lambda j: items[j]["audio"].shape[0])
        out.extend([[items[j] for j in chunk[k : k + batch_size]] for k in range(0, len(chunk), batch_size)])
    rng.shuffle(out)
    return out


def collate(batch: list[dict], ctc_key: str = "tokens"):
    lens = torch.tensor([b["audio"].shape[0] for b in batch])
    wavs = torch.zeros(len(batch), int(lens.max()))
    for i, b in enumerate(batch):
        wavs[i, : b["audio"].shape[0]] = b["audio"]
    tl = torch.tensor([len(b["tokens"]) for b in batch])
    toks = torch.zeros(len(batch), int(tl.max()) + 1, dtype=torch.long)
    for i, b in enumerate(batch):
        toks[i, 0] = 1
        toks[i, 1 : 1 + len(b["tokens"])] = torch.tensor(b["tokens"])
    cl = torch.tensor([len(b[ctc_key]) for b in batch])
    ctc = torch.zeros(len(batch), max(1, int(cl.max())), dtype=torch.long)
    for i, b in enumerate(batch):
        ctc[i, : len(b[ctc_key])] = torch.tensor(b[ctc_key])
    return wavs, lens.float() / lens.max(), toks, tl, (ctc, cl)


def loss_fn(model, wavs, wav_lens, toks, tl, ctc_tgt, ctc_weight: float, smoothing: float):
    """toks [B, 1+L] = bos + y (pad 0); decoder targets y + eos; CTC targets ctc_tgt = (tokens [B, L'], lens [B])
    (the whole target y, or only the transcript's tokens with ``--ctc-on transcript``)."""
    out = model(wavs, wav_lens, toks)
    b = toks.shape[0]
    tgt = torch.zeros_like(toks)
    tgt[:, :-1] = toks[:, 1:]
    tgt[torch.arange(b), tl] = 2  # eos
    ce = F.cross_entropy(out.logits.float().transpose(1, 2), tgt, ignore_index=0, label_smoothing=smoothing)
    if ctc_weight <= 0:
        return ce
    lp = out.ctc_log_probs.transpose(0, 1)  # [T', B, V]
    t_enc = out.ctc_log_probs.shape[1]
    in_lens = torch.clamp(torch.round(wav_lens * t_enc).long(), min=1)
    ctc = F.ctc_loss(lp, ctc_tgt[0], in_lens, ctc_tgt[1], blank=0, reduction="mean", zero_infinity=True)
    return ctc_weight * ctc + (1 - ctc_weight) * ce


@torch.no_grad()
def evaluate(
    model, items: list[dict], tok, max_len: int = 60, bs: int = 32, bf16: bool = False
) -> tuple[float, float, float]:
    """-> (intent accuracy %, transcript WER %, parse failure %)."""
    import jiwer

    from slukd.models.decoding import greedy_search

    model.eval()
    hyps, refs, correct = [], [], 0
    stats = ParseStats()
    examples: dict[int, str] = {}
    order = sorted(range(len(items)), key=lambda j: items[j]["audio"].shape[0])
    for i in range(0, len(order), bs):
        batch = [items[j] for j in order[i : i + bs]]
        wavs, wav_lens, _, _, _ = collate(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            enc = model.encode(wavs, wav_lens)
        seqs = greedy_search(model, enc, wav_lens, max_len=max_len)
        for j, b, s in zip(order[i : i + bs], batch, seqs):
            text = tok.decode(s)
            examples[j] = text
            p = parse(text, stats)
            correct += int(p.intent == b["intent"])
            hyps.append(p.transcript)
            refs.append(b["transcript"])
    model.train()
    for k in range(0, len(items), max(1, len(items) // 3))[:3]:
        logger.info("ref %r | hyp %r", items[order[k]]["target"], examples.get(order[k], ""))
    wer = jiwer.wer(refs, [h if h else "<empty>" for h in hyps]) * 100
    return 100.0 * correct / len(items), wer, 100.0 * stats.failed / max(1, stats.total)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(REPO / "data" / "slu_demo"))
    ap.add_argument("--tier", default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "results" / "bench" / "slu_learning_curve"))
    ap.add_argument("--scenarios", default=",".join(TASK1))
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument(
        "--eval_every", "--eval-every", type=float, default=45.0, help="seconds of training between evaluations"
    )
    ap.add_argument(
        "--eval_steps", "--eval-steps", type=int, default=0, help="evaluate every N steps instead (shared-CPU runs)"
    )
    ap.add_argument("--max_steps", "--max-steps", type=int, default=0, help="stop after N steps (0: --minutes decides)")
    ap.add_argument("--batch_size", "--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--ctc_weight", "--ctc-weight", type=float, default=0.5)
    ap.add_argument(
        "--ctc_on", "--ctc-on", choices=["target", "transcript"], default="target", help="what the CTC head learns"
    )
    ap.add_argument("--label_smoothing", "--label-smoothing", type=float, default=0.1)
    ap.add_argument("--vocab_size", "--vocab-size", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d_model", "--d-model", type=int, default=144)
    ap.add_argument("--enc_layers", "--enc-layers", type=int, default=4)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (slow on CPUs without AMX: see the docstring)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    corpus = synthesize_slu_corpus(a.corpus, tier=a.tier, seed=a.seed)
    paths = prepare_slurp(corpus, out / "manifests", splits=("train", "devel", "test"))
    logger.info("corpus + manifests: %.1f s", time.perf_counter() - t)
    rows = {s: read_manifest(p) for s, p in paths.items()}
    intents = sorted({r["intent"] for s in rows.values() for r in s})
    types = sorted({e["type"] for s in rows.values() for r in s for e in r["entities"]})
    tok = train_tokenizer(
        [r["target"] for r in rows["train"]], out / "tokenizer", a.vocab_size, special_tokens(intents, types)
    )
    scen = set(a.scenarios.split(","))
    root = str(Path(corpus).resolve())
    train = load_rows([r for r in rows["train"] if r["scenario"] in scen], root, tok)
    test = load_rows([r for r in rows["test"] if r["scenario"] in scen], root, tok)
    hours = sum(x["audio"].shape[0] for x in train) / 16000 / 3600
    logger.info(
        "task: %d train recordings (%.2f h), %d test recordings, vocab %d", len(train), hours, len(test), tok.vocab_size
    )

    from slukd.models.seq2seq import Seq2Seq, count_parameters

    model = Seq2Seq(
        tok.vocab_size,
        n_mels=40,
        d_model=a.d_model,
        nhead=4,
        num_encoder_layers=a.enc_layers,
        num_decoder_layers=2,
        d_ffn=4 * a.d_model,
        encoder_type="conformer",
        cnn_channels=(16, 16),
    )
    logger.info("model: %.2fM parameters", count_parameters(model) / 1e6)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-8)
    rng = random.Random(a.seed)
    curve = []
    train_s, step, epoch, next_eval = 0.0, 0, 0, a.eval_every
    max_len = max(len(x["tokens"]) for x in test) + 10
    print(f"{'minutes':>8} {'steps':>6} {'epochs':>6} {'loss':>7} {'intent_acc':>10} {'WER':>7}", flush=True)
    n_batches = math.ceil(len(train) / a.batch_size)
    running = []
    done = False
    while not done:
        epoch += 1
        for k, batch in enumerate(batches(train, a.batch_size, rng)):
            t0 = time.perf_counter()
            wavs, wav_lens, toks, tl, ctc_tgt = collate(batch, "ctc" if a.ctc_on == "transcript" else "tokens")
            for g in opt.param_groups:
                g["lr"] = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                loss = loss_fn(model, wavs, wav_lens, toks, tl, ctc_tgt, a.ctc_weight, a.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            running.append(float(loss.detach()))
            train_s += time.perf_counter() - t0
            stop = train_s >= a.minutes * 60 if not a.max_steps else step >= a.max_steps
            due = (step % a.eval_steps == 0) if a.eval_steps else train_s >= next_eval
            if due or stop:
                next_eval += a.eval_every
                acc, wer, fail = evaluate(model, test, tok, max_len, bf16=a.bf16)
                ep = epoch - 1 + (k + 1) / n_batches
                ml = sum(running[-50:]) / len(running[-50:])
                curve.append(
                    {
                        "minutes": train_s / 60,
                        "steps": step,
                        "epochs": ep,
                        "loss": ml,
                        "intent_acc": acc,
                        "wer": wer,
                        "parse_fail": fail,
                    }
                )
                print(f"{train_s / 60:8.2f} {step:6d} {ep:6.2f} {ml:7.3f} {acc:10.1f} {wer:7.1f}", flush=True)
                if stop:
                    done = True
                    break
    res = {
        "args": vars(a),
        "train_recordings": len(train),
        "train_hours": hours,
        "test_recordings": len(test),
        "s_per_step": train_s / max(1, step),
        "curve": curve,
    }
    (out / "curve.json").write_text(json.dumps(res, indent=1))
    print(f"{train_s / max(1, step):.3f} s/step; curve written to {out / 'curve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
