"""Data preparation of the SLU recipe, done once per run folder: corpus, manifests, audio check, tokenizer, scenario.

- :func:`prepare_corpus`: synthesises the built-in corpus on first use (``corpus: demo``) or reads a user's SLURP
  folder, writes the manifests under ``<output_folder>/manifests`` (main process), decodes every recording once
  (``audio_check.json``) and drops the unusable ones (or stops, with ``skip_bad: false``);
- :func:`prepare_tokenizer`: the SentencePiece model with every separator, intent and entity type as one token;
- :func:`prepare_scenario`: the task split, written to ``scenario.json`` (a rerun with another split is an error);
- :func:`label_report`: test items whose scenario is in no task, test intents never seen in training (both counted).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechbrain.utils.distributed import if_main_process, run_on_main

from slukd.continual.scenario import Scenario, make_scenario
from slukd.utils.io import atomic_write_json
from slukd.utils.run import IncompatibleRunError

logger = logging.getLogger(__name__)

__all__ = ["SLUData", "prepare_corpus", "prepare_tokenizer", "prepare_scenario", "label_report"]


@dataclass
class SLUData:
    """Manifest rows per split ({"train", "devel", "test"}: list of dicts), the corpus folder and what was
    skipped or handled while preparing (``report``: goes into every step result)."""

    rows: dict[str, list[dict]]
    root: str
    report: dict[str, Any] = field(default_factory=dict)


#: run-folder entries made from the data (deleted by data_changed: restart); the run record and logs stay
DATA_OUTPUTS = ("manifests", "audio_check.json", "tokenizer", "scenario.json", "model.yaml", "results", "report.csv",
                "report.md", "matrix_intent_acc.csv", "matrix_wer.csv", "matrix_full_wer.csv", "matrix_slu_f1.csv",
                "acc_per_step.png", "acc_matrix.png")  # fmt: skip


def _manifests(hp: dict[str, Any], out: Path) -> tuple[dict[str, list[dict]], str, dict[str, Any]]:
    from slukd.data.fingerprint import check_run_data
    from slukd.data.slurp import SlurpFormatError, prepare_slurp, read_prepare_report
    from slukd.slu.data import read_manifest_checked

    data_folder = Path(hp["data_folder"])
    if hp["corpus"] == "demo":
        from slukd.data.synth_slu import synthesize_slu_corpus

        run_on_main(
            synthesize_slu_corpus,
            kwargs={"out_dir": str(data_folder), "tier": hp["tier"], "seed": hp["corpus_seed"],
                    "progress": not hp["noprogressbar"], "replace": False},
        )  # fmt: skip
    elif hp["corpus"] != "slurp":
        raise ValueError(f"hparam corpus must be 'demo' or 'slurp', got {hp['corpus']!r}")
    splits = ["train", "devel", "test"] + (["train_synthetic"] if hp["use_synthetic"] else [])
    if not (data_folder / "dataset" / "slurp").is_dir():
        raise FileNotFoundError(f"{data_folder}: not a SLURP-layout folder (no dataset/slurp/*.jsonl)")
    # the data a resumed (or finished) run was started on (data_changed: stop | restart | keep), as for captioning
    outputs = list(DATA_OUTPUTS) + [p.name for p in out.glob("task*")] + [p.name for p in out.glob("memory_*")]
    state = check_run_data("slu", hp, out, outputs)
    kwargs = {
        "data_folder": str(data_folder),
        "out_dir": str(out / "manifests"),
        "splits": splits,
        "max_duration": hp["max_duration"],
        "headset_only": hp["headset_only"],
        "skip_bad": hp["skip_bad"],
    }
    kept = state == "kept" and all((out / "manifests" / f"{s}.csv").is_file() for s in splits)
    if not kept:  # data_changed: keep -> the manifests made at the start are used as they are
        run_on_main(prepare_slurp, kwargs=kwargs)
    rows = {}
    for split in splits:
        path = out / "manifests" / f"{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {split} manifest (is {data_folder} a SLURP-layout corpus?)")
        rows[split] = read_manifest_checked(path)
    if hp["use_synthetic"]:
        rows["train"] = rows["train"] + rows.pop("train_synthetic")
    skipped = read_prepare_report(out / "manifests").skipped
    for split in ("train", "devel", "test"):
        if not rows[split]:  # named by the corpus file it comes from (the manifest is ours)
            why = skipped.get(split) or {}
            why = ", ".join(f"{n} {r}" for r, n in sorted(why.items())) if why else "the file has no item lines"
            source = data_folder / "dataset" / "slurp" / f"{split}.jsonl"
            raise SlurpFormatError(f"{source}: no usable items in the {split} split ({why})")
    report = {"prepare_skipped": skipped}
    if state in ("kept", "restarted"):  # a rerun after a data change says how it went on
        report["data_state"] = state
    return rows, str(data_folder.resolve()), report


def _check_audio(hp: dict[str, Any], out: Path, rows: dict[str, list[dict]], root: str):
    """Decode every recording once (main process, cached in ``audio_check.json``); drop the unusable ones
    (``skip_bad: true``, counted) or stop with :class:`slukd.slu.data.BadAudioError` naming them."""
    from slukd.data.audio import check_and_drop_audio

    # audio_check: false still checks the test split (a bad test clip would otherwise crash after all training)
    splits = ("train", "devel", "test") if hp["audio_check"] else ("test",)
    checked, skipped, check = check_and_drop_audio(
        {s: rows[s] for s in splits}, root, out, sample_rate=hp["sample_rate"], max_seconds=hp["max_audio_seconds"],
        skip_bad=hp["skip_bad"], required=splits,
    )  # fmt: skip
    rows = {**rows, **checked}
    if skipped.get("test"):
        logger.warning("test items with unusable audio are left out of every score: %s", skipped["test"])
    notes = {k: v for k, v in check.notes.items() if v}
    if notes:
        logger.info("audio handled while checking %d files: %s", check.n_files, notes)
    return rows, {"audio_checked": bool(hp["audio_check"]) or "test", "audio_skipped": skipped,
                  "audio_notes": check.notes}  # fmt: skip


def prepare_corpus(hp: dict[str, Any], out: str | Path) -> SLUData:
    """Corpus, manifests and audio check of a run (see the module docstring)."""
    from slukd.data.audio import duration_outliers

    out = Path(out)
    rows, root, report = _manifests(hp, out)
    rows, audio_report = _check_audio(hp, out, rows, root)
    report.update(audio_report)
    long = duration_outliers({r["ID"]: float(r["duration"]) for r in rows["train"]}, factor=4.0)
    report["duration_outliers"] = len(long["outliers"])
    return SLUData(rows=rows, root=root, report=report)


def prepare_tokenizer(hp: dict[str, Any], out: str | Path, data: SLUData):
    """Train the SentencePiece tokenizer once per run on the full training text, with every separator and every
    intent and entity type of the training and validation data as a whole token (the label inventory of all tasks
    is known up front, as in the reference code). Test labels never shape the model: an intent or entity type seen
    only at test time has no token, cannot be predicted and is scored as an error (and counted)."""
    from slukd.data.target import special_tokens
    from slukd.data.tokenizer import MODEL_NAME, Tokenizer, train_tokenizer

    tok_dir = Path(out) / "tokenizer"
    rows = data.rows
    if not (tok_dir / MODEL_NAME).is_file():
        all_rows = rows["train"] + rows["devel"]
        intents = sorted({r["intent"] for r in all_rows})
        types = sorted({e["type"] for r in all_rows for e in r["entities"]})
        run_on_main(
            train_tokenizer,
            kwargs={
                "texts": [r["target"] for r in rows["train"]],
                "out_dir": str(tok_dir),
                "vocab_size": hp["vocab_size"],
                "model_type": hp["tokenizer_type"],
                "user_symbols": special_tokens(intents, types),
            },
        )
    return Tokenizer.load(tok_dir / MODEL_NAME)


def prepare_scenario(hp: dict[str, Any], out: str | Path, data: SLUData) -> Scenario:
    """The task split (written to ``scenario.json``; a rerun with a different split is an error)."""
    scenario = make_scenario(
        hp["split"], hp["order"], hp["order_seed"], present={r["scenario"] for r in data.rows["train"]}
    )
    path = Path(out) / "scenario.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != scenario.to_dict():
            raise IncompatibleRunError(f"{path}: the run folder was made with another task split ({old['name']})")
    elif if_main_process():
        atomic_write_json(path, scenario.to_dict())
    logger.info("scenario %s: %s", scenario.name, " | ".join(",".join(t) for t in scenario.tasks))
    return scenario


def label_report(data: SLUData, scenario: Scenario) -> dict[str, Any]:
    """Test items whose scenario is in no task (never scored) and test intents absent from training."""
    rows = data.rows
    outside = Counter(r["scenario"] for r in rows["test"] if scenario.task_of(r["scenario"]) is None)
    train_intents = {r["intent"] for r in rows["train"]}
    unseen = Counter(r["intent"] for r in rows["test"] if r["intent"] not in train_intents)
    known_intents = train_intents | {r["intent"] for r in rows["devel"]}
    known_types = {e["type"] for split in ("train", "devel") for r in rows[split] for e in r["entities"]}
    no_token = Counter(r["intent"] for r in rows["test"] if r["intent"] not in known_intents)
    no_token_types = Counter(e["type"] for r in rows["test"] for e in r["entities"] if e["type"] not in known_types)
    if outside:
        logger.warning(
            "%d test items belong to scenarios of no task and are not scored: %s", sum(outside.values()), dict(outside)
        )
    if unseen:
        logger.warning(
            "%d test items have intents absent from the training data (scored, never predictable): %s",
            sum(unseen.values()),
            dict(unseen),
        )
    if no_token or no_token_types:
        logger.warning(
            "test labels absent from train and devel have no tokenizer symbol (never predictable, scored as errors): "
            "intents %s, entity types %s",
            dict(no_token),
            dict(no_token_types),
        )
    return {
        "test_outside_tasks": dict(sorted(outside.items())),
        "test_unseen_intents": dict(sorted(unseen.items())),
        "test_intents_without_token": dict(sorted(no_token.items())),
        "test_entity_types_without_token": dict(sorted(no_token_types.items())),
    }
