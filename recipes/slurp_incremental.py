#!/usr/bin/env python3
"""Class-incremental end-to-end SLU on SLURP with rehearsal and knowledge distillation (one YAML per table row).

    python recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml [--seed 1] [--key value ...]
    python recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml --task 2     # one task per job
    torchrun --nproc_per_node=4 recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml --device cuda

The 18 SLURP scenarios arrive in tasks (``split``: slurp3 | slurp6 | joint). Task t trains the seq2seq student
(intent, slots and transcript as one target) on its scenarios' training items plus the rehearsal memory, starting
from task t-1's model; the KD terms of the row (encoder/audio-KD, tok-KD, seq-KD) distil a frozen copy of that
model into the student on the memory items (or on every item: ``kd_scope: all``); the row's continual methods
(``continual_methods`` + ``extra_continual_methods``: rehearsal, EWC, MAS, A-GEM, DER++) add their hooks; the best
validation checkpoint is tested on every scenario seen so far; the plugins then update their state (the memory).
Rerunning the same command resumes where it stopped.

Wiring, top to bottom: data (corpus, manifests, tokenizer, scenario) -> the continual methods (plugins: rehearsal
memory, EWC, ...) -> the shared first task -> the strategy (slukd.slu.SLUStrategy: one task is model, teacher,
teacher targets, SLUBrain.fit; then the test) -> the continual loop.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from speechbrain.utils.distributed import if_main_process

from slukd.checks import check_slu
from slukd.config import later_task_keys
from slukd.continual import ContinualRunner, check_plugins
from slukd.continual.first_task import FirstTaskCache
from slukd.continual.runner import TaskOrderError
from slukd.data.audio import set_audio_cache
from slukd.experiment import main_guard, start_experiment
from slukd.report import write_run_report
from slukd.slu import SLUStrategy, label_report, prepare_corpus, prepare_scenario, prepare_tokenizer
from slukd.utils.model_io import save_model_spec
from slukd.utils.provenance import first_task_key, record_data_identity, step_header

logger = logging.getLogger("slurp_incremental")

#: hparams that cannot change results (left out of the run identity; every other resolved setting is in it).
NOT_IDENTITY = frozenset(
    {
        "task",
        "output_folder",
        "num_workers",
        "noprogressbar",
        "device",
        "eval_batch_size",
        "first_task_cache",
        "audio_cache_mb",
        "data_changed",
        "data_fingerprint_audio",
        "test_data_folder",
    }
)


def main(argv: list[str]) -> int:
    hparams, run_opts = start_experiment(argv, NOT_IDENTITY, recipe="recipes/slurp_incremental.py", check=check_slu)
    out = Path(hparams["output_folder"])
    set_audio_cache(hparams["audio_cache_mb"])

    # data: corpus and manifests (audio decoded once), tokenizer, task split
    data = prepare_corpus(hparams, out)
    tokenizer = prepare_tokenizer(hparams, out, data)
    scenario = prepare_scenario(hparams, out, data)
    data.report.update(label_report(data, scenario))
    if if_main_process():  # how to rebuild the model (inference, export): model.yaml next to the tokenizer
        save_model_spec(
            out, (out / "hparams_resolved.yaml").read_text(encoding="utf-8"), vocab_size=tokenizer.vocab_size,
            test_beam_size=hparams["test_beam_size"], max_decode_len=hparams["max_decode_len"],
            eval_precision=hparams["eval_precision"], sample_rate=hparams["sample_rate"],
            length_penalty=hparams["length_penalty"],
            tasks=[list(task) for task in scenario.tasks],
        )  # fmt: skip

    # the continual-learning methods (plugins; rehearsal is one): sized from the data, state kept per task
    plugins = check_plugins(hparams["continual_methods"] + hparams["extra_continual_methods"])
    for plugin in plugins:
        plugin.setup({"n_train": len(data.rows["train"]), "n_classes": len(scenario.classes), "seed": hparams["seed"],
                      "out": out})  # fmt: skip

    # the first task is shared by the rows of a seed (no memory, no teacher yet): trained once, reused by the others;
    # the settings marked {later} in the hparams cannot change it, nor can the plugins that say so; the key also holds
    # the code and the data's digest (a corpus made again in the same folder never reuses a stale task 1)
    if if_main_process():
        record_data_identity(out)
    cache, key = None, None
    if hparams["first_task_cache"] is not None and scenario.n_tasks > 1:
        plugin_ids = [repr(p) for p in plugins if p.changes_first_task]
        cache = FirstTaskCache(hparams["first_task_cache"])
        key = first_task_key(out, NOT_IDENTITY | later_task_keys(argv[0]), __file__, {"plugins": plugin_ids})

    # the continual loop (every step result records the device, the code and the data digest)
    header = step_header(hparams, run_opts.device, out, __file__)
    runner = ContinualRunner(out, scenario.n_tasks, plugins, header=header, first_task_cache=cache,
                             first_task_key=key, report=write_run_report, seed=hparams["seed"])  # fmt: skip
    strategy = SLUStrategy(hparams, run_opts, data, tokenizer, scenario, runner)
    task = hparams["task"]
    if run_opts.test_only:  # evaluate finished tasks again (on the run's test split or on test_data_folder)
        return test_only(hparams, strategy, runner, data, int(task) if task is not None else None)
    summary = runner.run(strategy, only_task=int(task) if task is not None else None)
    if summary:  # every task done (main process): the report's headline
        logger.info("Avg Acc %.2f, Last Acc %.2f, Avg WER %.2f (report in %s)", 100 * summary["avg_acc"],
                    100 * summary["last_acc"], 100 * summary["avg_wer"], out / "report.md")  # fmt: skip
    return 0


def test_only(hparams, strategy, runner, data, only_task):
    """``--test_only``: the selected model of each finished task (or of ``--task N``) decodes the test split again
    (or the test split of ``test_data_folder``); predictions, wer.txt and scores go to ``<output_folder>/test_only``
    and the run's own results are never touched."""
    from slukd.data.audio import dropped_items
    from slukd.data.slurp import prepare_slurp
    from slukd.slu.data import read_manifest_checked
    from slukd.utils.io import atomic_write_json

    dest = runner.out / "test_only"
    report = data.report
    if hparams["test_data_folder"]:
        from slukd.data.audio import check_and_drop_audio
        from slukd.data.slurp import read_prepare_report

        folder = Path(hparams["test_data_folder"])
        prepare_slurp(str(folder), str(dest / "manifests"), splits=["test"], skip_bad=hparams["skip_bad"])
        data.rows["test"] = read_manifest_checked(dest / "manifests" / "test.csv")
        data.root = str(folder.resolve())
        rows, audio_skipped, _ = check_and_drop_audio(
            {"test": data.rows["test"]}, data.root, dest, sample_rate=hparams["sample_rate"],
            max_seconds=hparams["max_audio_seconds"], skip_bad=hparams["skip_bad"], required=("test",),
        )  # fmt: skip
        data.rows["test"] = rows["test"]
        report = {"prepare_skipped": read_prepare_report(dest / "manifests").skipped, "audio_skipped": audio_skipped}
    tasks = [t for t in range(runner.n_tasks) if runner.done(t)]
    if only_task is not None:
        tasks = [t for t in tasks if t == only_task - 1]
    if not tasks:
        raise TaskOrderError(f"{runner.out}: no finished task to test (--test_only needs a trained task)")
    for t in tasks:
        tdir = dest / f"task{t + 1}"
        tdir.mkdir(parents=True, exist_ok=True)
        scores = strategy.evaluate(t, strategy.load_trained(t), dest=tdir)
        if scores is not None:
            source = hparams["test_data_folder"] or hparams["data_folder"]
            atomic_write_json(
                dest / "results" / f"step{t + 1}.json",
                {"step": t + 1, "test_data": source, "dropped": dropped_items(report), **scores},
            )
            logger.info("test_only: task %d -> %s", t + 1, json.dumps(scores["seen"]))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main, doc=__doc__))
