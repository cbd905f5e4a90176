#!/usr/bin/env python3
"""Efficient audio captioning with encoder-level knowledge distillation (one YAML per table row).

    python recipes/captioning_kd.py hparams/captioning_kd/teacher.yaml [--number_of_epochs 3] [--device cuda]
    python recipes/captioning_kd.py hparams/captioning_kd/student_seqkd_contrastive_audio.yaml --seed 1
    torchrun --nproc_per_node=2 recipes/captioning_kd.py hparams/captioning_kd/student_seqkd.yaml

A row trains one captioner. The teacher row trains the large model on the captions. A student row trains the small
model on its captions and, with KD weights, distils the frozen teacher (``teacher_folder``) into it: sequence-level
KD on the teacher's beam-3 captions, encoder-level KD (MSE or contrastive) on pooled clip embeddings, token-level
KD; rows with ``audio_only`` also train on caption-free clips (teacher pseudo-captions + encoder KD). The best
validation checkpoint (CIDEr-D) is tested with beam search. Rerunning the same command resumes where it stopped;
a finished row is a no-op.

Wiring, top to bottom: data (corpus, manifests, audio check, pools) -> vocabulary and teacher -> teacher targets
-> model and KD terms -> datasets -> CaptionBrain.fit -> test with the best checkpoint -> results.json.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

from speechbrain.utils.distributed import if_main_process

from slukd.captioning.brain import CaptionBrain
from slukd.captioning.data import EpochClock, audio_dataset, caption_dataset, pseudo_caption_dataset
from slukd.captioning.evaluate import evaluate_split, write_outputs
from slukd.captioning.prepare import audio_only_rows, build_vocab, check_caption_data, prepare_captions
from slukd.checks import check_captioning
from slukd.continual.runner import barrier
from slukd.data.audio import dropped_items, set_audio_cache
from slukd.data.captions import WordVocab
from slukd.distill import Teacher, TeacherTargets
from slukd.experiment import main_guard, start_experiment, world_size
from slukd.models.seq2seq import count_parameters
from slukd.report.curves import plot_train_log
from slukd.train import CompleteCheckpointer, make_train_logger
from slukd.train.brain import read_epoch_times
from slukd.train.sampling import train_loader
from slukd.train.targets import teacher_targets
from slukd.utils.faults import maybe_die
from slukd.utils.io import atomic_torch_save, atomic_write_json
from slukd.utils.model_io import load_model, read_model_spec, save_model_spec
from slukd.utils.provenance import CAPTIONING_CODE, code_record, device_record
from slukd.utils.run import seed_everything

logger = logging.getLogger("captioning_kd")

#: hparams that cannot change results (left out of the run identity; every other resolved setting is in it).
NOT_IDENTITY = frozenset(
    {
        "output_folder",
        "num_workers",
        "noprogressbar",
        "device",
        "eval_batch_size",
        "synth_jobs",
        "audio_cache_mb",
        "data_changed",
        "data_fingerprint_audio",
    }
)


def load_teacher(folder: Path, device: str) -> tuple[Teacher, WordVocab, dict]:
    """The finished teacher run in ``folder``: frozen model, its vocabulary and how it was evaluated."""
    need = [folder / "results.json", folder / "model.yaml", folder / "vocab.json", folder / "model.ckpt"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"teacher not found: {missing[0]} is missing. Train the teacher row first "
            f"(python recipes/captioning_kd.py hparams/captioning_kd/teacher.yaml) or set teacher_folder."
        )
    model = load_model(folder, folder / "model.ckpt")
    return Teacher(model, device=device), WordVocab.load(folder / "vocab.json"), read_model_spec(folder)


def compute_teacher_targets(hp, teacher, spec, rows, kd_terms, device) -> TeacherTargets:
    """Pseudo-captions and pooled embeddings of ``rows`` from the teacher, decoded as the teacher was evaluated
    (its beam size, length limit and precision), once per teacher, by item and data
    (:func:`slukd.train.targets.teacher_targets`, shared with the SLU recipe). They are cached in the student's own
    folder (``<output_folder>/teacher_targets``): nothing is written into the teacher's folder, which may be shared
    and read-only."""
    want_hyps = any("teacher_hyps" in t.needs for t in kd_terms)
    want_emb = any("teacher_emb" in t.needs for t in kd_terms)
    beam, max_len, precision = spec["test_beam_size"], spec["max_decode_len"], spec["eval_precision"]
    sr, crop = hp["sample_rate"], hp["max_audio_seconds"]
    return teacher_targets(
        teacher, audio_dataset(rows, sr, crop), {r["ID"]: r["wav"] for r in rows},
        Path(hp["output_folder"]) / "teacher_targets",
        {"beam": beam, "max_len": max_len, "precision": precision, "kind": "caption"},
        beam_size=beam, max_len=max_len, precision=precision, device=device, batch_size=hp["eval_batch_size"],
        hyps=want_hyps, emb=want_emb, loading=(sr, crop), progress=not hp["noprogressbar"],
        on_batch=lambda k: maybe_die("targets", 1, k),
    )  # fmt: skip


def make_brain(hparams, run_opts, model, vocab, data, ao_rows, teacher, kd_terms, targets, out):
    """The CaptionBrain of the row, its datasets, sampler, schedule and logs (returns brain, counter, train/valid
    sets and the loader arguments for ``fit``)."""
    clock = EpochClock(hparams["seed"])
    sr, crop = hparams["sample_rate"], hparams["max_audio_seconds"]
    train_ds = caption_dataset(data.rows["train"], vocab, clock, sr, crop)  # the epoch's reference per clip
    valid_ds = caption_dataset(data.rows["valid"], vocab, None, sr, crop, sort=True)
    ao_ds = None  # audio-only clips with the teacher's pseudo-caption as their target
    if ao_rows and targets is not None and targets.want_hyps:
        ids = [r["ID"] for r in ao_rows]
        hyps = {i: h for i, h in zip(ids, targets.hyps_of(ids)) if h is not None}
        ao_ds = pseudo_caption_dataset(ao_rows, hyps, vocab.bos_id, vocab.eos_id, sr, crop)
    epochs = hparams["number_of_epochs"]
    counter = hparams["epoch_counter"](limit=epochs)
    checkpointer = CompleteCheckpointer(out / "save", recoverables={"model": model, "counter": counter})
    train_set, loader_kwargs, sampler = train_loader(
        hparams["batching"], train_ds, [r["duration"] for r in data.rows["train"]], hparams["batch_size"],
        hparams["seed"] * 7919, hparams["num_workers"],
    )  # fmt: skip
    schedule = hparams["lr_schedule"]
    per_epoch = len(sampler) if not loader_kwargs else len(train_ds) / (hparams["batch_size"] * world_size())
    schedule.total_steps = epochs * math.ceil(per_epoch)
    brain = CaptionBrain(
        modules={"model": model}, opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts,
        checkpointer=checkpointer, teacher=teacher, kd_terms=kd_terms, kd_mode="sum", targets=targets,
        vocab=vocab, clock=clock, valid_refs={r["ID"]: r["captions"] for r in data.rows["valid"]},
        bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, valid_beam_size=hparams["valid_beam_size"],
        max_decode_len=hparams["max_decode_len"], valid_every=hparams["valid_every"],
        seed_base=hparams["seed"] * 1_000_003, sampler=sampler, lr_schedule=schedule,
        train_logger=make_train_logger(hparams, out / "train_log.txt", out / "tensorboard"),
        train_log_path=out / "train_log.txt", epoch_times_path=out / "epoch_times.json",
        batch_hook=lambda k: maybe_die("train", 1, k), batching=hparams["batching"],
        audio_only_set=ao_ds, audio_only_durations=[r["duration"] for r in ao_rows],
        audio_only_loader_kwargs={"batch_size": hparams["audio_only_batch_size"],
                                  "num_workers": hparams["num_workers"]},
    )  # fmt: skip
    valid_kwargs = {"batch_size": hparams["eval_batch_size"], "num_workers": hparams["num_workers"]}
    return brain, counter, checkpointer, train_set, valid_ds, loader_kwargs, valid_kwargs


def test_model(hparams, model, vocab, data, device, out):
    """Beam search over the whole test split, metrics at once; the main process writes the predictions."""
    test_ds = audio_dataset(data.rows["test"], hparams["sample_rate"], hparams["max_audio_seconds"])
    metrics, preds = evaluate_split(
        model, vocab, test_ds, {r["ID"]: r["captions"] for r in data.rows["test"]},
        beam_size=hparams["test_beam_size"], batch_size=hparams["eval_batch_size"],
        max_len=hparams["max_decode_len"], device=device, precision=hparams["eval_precision"],
        progress=not hparams["noprogressbar"], metric_options=hparams["metric_options"],
        on_batch=lambda k: maybe_die("eval", 1, k),
    )  # fmt: skip
    if if_main_process():
        write_outputs(out, "test", metrics, preds, data.rows["test"], n_samples=hparams["n_samples"])
        for name, why in metrics["skipped"].items():
            logger.info("%s skipped: %s", name, why)
    return metrics


def main(argv: list[str]) -> int:
    hparams, run_opts = start_experiment(argv, NOT_IDENTITY, recipe="recipes/captioning_kd.py", check=check_captioning)
    out = Path(hparams["output_folder"])
    device = run_opts.device or "cpu"
    set_audio_cache(hparams["audio_cache_mb"])
    state = check_caption_data(hparams, out)  # changed data: stop, or restart (results deleted), or keep
    barrier()
    if (out / "results.json").is_file() and not run_opts.test_only:  # same settings and data (checked), finished
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        logger.info("%s is finished (results.json present): CIDEr-D %.3f", out, results["test"]["CIDEr_D"])
        print(f"{hparams['row']}: CIDEr-D {results['test']['CIDEr_D']:.3f} (finished earlier)")
        return 0

    # data: corpus, manifests, clips decoded once, audio-only pools
    data = prepare_captions(hparams, out, state)
    ao_rows = audio_only_rows(hparams, data)
    if run_opts.test_only:  # the finished model on the test split again (a new corpus: --data_folder elsewhere)
        model = load_model(out, out / "model.ckpt", device)
        metrics = test_model(hparams, model, WordVocab.load(out / "vocab.json"), data, device, out / "test_only")
        if if_main_process():  # what was scored, on which data, and how many test clips were left out
            atomic_write_json(out / "test_only" / "results.json", {
                "row": hparams["row"], "test_data": str(hparams["data_folder"]), "dropped": dropped_items(data.report),
                "test": {k: v for k, v in metrics.items() if not k.startswith("per_item_")},
            })  # fmt: skip
        print(f"{hparams['row']} (test_only): CIDEr-D {metrics['CIDEr_D']:.3f}")
        return 0

    # KD terms of the row; with any, the frozen teacher (whose vocabulary the student shares)
    kd_terms = [t for t in hparams["kd_terms"] + hparams["extra_kd_terms"] if t.active]
    teacher, targets, spec = None, None, {}
    if kd_terms:
        teacher, vocab, spec = load_teacher(Path(hparams["teacher_folder"]), device)
    else:
        vocab = build_vocab(hparams, data.rows["train"])
    if if_main_process():
        vocab.save(out / "vocab.json")
        save_model_spec(
            out, (out / "hparams_resolved.yaml").read_text(encoding="utf-8"), vocab_size=vocab.vocab_size,
            test_beam_size=hparams["test_beam_size"], max_decode_len=hparams["max_decode_len"],
            eval_precision=hparams["eval_precision"],
        )  # fmt: skip

    # teacher targets: pseudo-captions and embeddings of every training and audio-only clip, once per teacher
    t0 = time.perf_counter()
    if teacher is not None and any(t.needs & {"teacher_hyps", "teacher_emb"} for t in kd_terms):
        targets = compute_teacher_targets(hparams, teacher, spec, data.rows["train"] + ao_rows, kd_terms, device)
    targets_s = time.perf_counter() - t0

    # the model and the KD heads (the MSE head starts at the teacher embeddings' mean: the uninformed prediction)
    seed_everything(hparams["seed"])
    model = hparams["model"](vocab_size=vocab.vocab_size)
    n_params = count_parameters(model)
    logger.info("%s: %.2fM parameters, vocabulary %d", hparams["row"], n_params / 1e6, vocab.vocab_size)
    if teacher is not None:
        mean = targets.emb_mean([r["ID"] for r in data.rows["train"]]) if targets is not None else None
        for term in kd_terms:
            term.setup(model.encoder_dim, teacher.module.encoder_dim, target_mean=mean)

    # train, keeping the best validation checkpoint (CIDEr-D)
    brain, counter, checkpointer, train_set, valid_ds, loader_kwargs, valid_kwargs = make_brain(
        hparams, run_opts, model, vocab, data, ao_rows, teacher, kd_terms, targets, out
    )
    brain.fit(counter, train_set, valid_ds, train_loader_kwargs=loader_kwargs, valid_loader_kwargs=valid_kwargs)
    trained_steps = brain.optimizer_step  # the budget; restoring the best checkpoint below restores its counter
    best = checkpointer.recover_if_possible(max_key="CIDEr_D")
    if best is None:
        raise RuntimeError(f"{out / 'save'}: no checkpoint after training")

    # test with the best checkpoint; results.json is written last (it marks a finished row)
    metrics = test_model(hparams, brain._model, vocab, data, device, out)
    if not if_main_process():
        return 0
    atomic_torch_save(brain._model.state_dict(), out / "model.ckpt")
    plot_train_log(out / "train_log.txt", out / "curves.png")
    times = read_epoch_times(out / "epoch_times.json")
    results = {
        "row": hparams["row"], "role": hparams["role"], "seed": hparams["seed"],
        "kd": "+".join(f"{t.name}-{t.kind}" if t.name == "enc" else t.name for t in brain.kd_terms) or "-",
        "captioned_fraction": float(hparams["captioned_fraction"]), "audio_only": hparams["audio_only"],
        "teacher": str(hparams["teacher_folder"]) if teacher is not None else None,
        "teacher_fingerprint": teacher.fingerprint if teacher is not None else None,
        "params": n_params, "n_train": len(data.rows["train"]),
        "n_audio_only": len(ao_rows) if brain.audio_only_set is not None else 0,
        "best_valid_CIDEr_D": best.meta.get("CIDEr_D"), "best_epoch": best.meta.get("epoch"),
        "epochs": hparams["number_of_epochs"], "steps": trained_steps, "best_steps": brain.optimizer_step,
        "train_minutes": round(sum(times) / 60, 2), "targets_s": round(targets_s, 1),
        "precision": hparams["precision"], "eval_precision": hparams["eval_precision"], "data": data.report,
        "test": {k: v for k, v in metrics.items() if not k.startswith("per_item_")},
        "device": device_record(str(device)), "code": code_record([__file__], include=CAPTIONING_CODE),
    }  # fmt: skip
    atomic_write_json(out / "results.json", results)
    print(f"{hparams['row']}: CIDEr-D {metrics['CIDEr_D']:.3f}  BLEU-4 {metrics['BLEU_4']:.3f}  "
          f"ROUGE-L {metrics['ROUGE_L']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main, doc=__doc__))
