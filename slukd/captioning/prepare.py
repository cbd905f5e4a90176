"""Data preparation of the captioning recipe, done once per run folder: corpus, manifests, audio check, pools.

- :func:`prepare_captions`: generates the built-in scenes corpus on first use (``corpus: scenes``) or reads a
  user's Clotho / AudioCaps folder; writes manifests under ``<output_folder>/manifests``; decodes every clip once at
  start-up (``audio_check.json``) and drops the unusable ones, counted (``skip_bad: true``), or stops naming them.
- Audio-only clips come in two pools, named for what they are: ``pool`` (clips that never had captions: the
  built-in caption-free clips or a user's ``audio_only_folder``; a teacher trained on the captioned set never saw
  captions of them) and ``remainder`` (training clips whose captions a data-scarce row drops; the teacher, trained
  on every caption, did see theirs: the paper-like "pretrained teacher" setting).
- :func:`build_vocab`: the word vocabulary of the captions a row trains on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechbrain.utils.distributed import run_on_main

logger = logging.getLogger(__name__)

__all__ = ["CaptionData", "check_caption_data", "prepare_captions", "audio_only_rows", "build_vocab", "POOL_PREFIX"]

#: ID prefix of the clips that never had captions (see slukd.data.captions); other audio-only clips are the
#: uncaptioned remainder of the training set.
POOL_PREFIX = "audio_only_"


@dataclass
class CaptionData:
    """Manifest rows per split: ``train``, ``valid``, ``test`` and the audio-only ``pool`` and ``remainder``;
    ``report``: what preparation skipped or handled (by split and reason), copied into the results."""

    rows: dict[str, list[dict[str, Any]]]
    report: dict[str, Any] = field(default_factory=dict)


def check_caption_data(hp: dict[str, Any], out: str | Path) -> str:
    """The corpus (generated on first use for ``corpus: scenes``) and the run's data policy
    (:func:`slukd.data.fingerprint.check_run_data`, shared with the SLU recipe): called before a finished run is
    called finished, so a changed corpus is noticed (stop), starts the run over (restart, ``results.json``
    deleted) or is ignored (keep). Returns the state ("new", "same", "restarted", "kept")."""
    from slukd.data.fingerprint import check_run_data

    corpus, data = hp["corpus"], Path(hp["data_folder"])
    if corpus == "scenes":
        from slukd.data.synth_scenes import generate_scenes

        run_on_main(
            generate_scenes,
            kwargs={"out_dir": data, "tier": hp["tier"], "seed": int(hp["corpus_seed"]), "jobs": hp["synth_jobs"],
                    "progress": not hp["noprogressbar"]},
        )  # fmt: skip
    elif corpus not in ("clotho", "audiocaps"):
        raise ValueError(f"hparam corpus must be scenes, clotho or audiocaps; got {corpus!r}")
    return check_run_data("captioning", hp, Path(out), DATA_OUTPUTS)


def _manifests(hp: dict[str, Any], out: Path, state: str | None) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    from slukd.data.captions import (
        CaptionFormatError,
        prepare_audiocaps,
        prepare_clotho,
        read_manifest,
        read_prepare_report,
    )

    data = Path(hp["data_folder"])
    man = out / "manifests"
    kwargs = dict(
        audio_only_folder=hp["audio_only_folder"], captioned_fraction=float(hp["captioned_fraction"]),
        seed=int(hp["corpus_seed"]), skip_bad=bool(hp["skip_bad"]),
    )  # fmt: skip
    if state is None:
        state = check_caption_data(hp, out)
    prepare = prepare_audiocaps if hp["corpus"] == "audiocaps" else prepare_clotho
    paths = {s: man / f"{s}.csv" for s in ("train", "valid", "test", "audio_only")}
    if not (state == "kept" and all(p.is_file() for p in paths.values())):  # keep: the manifests made at the start
        run_on_main(prepare, args=[data, man], kwargs=kwargs)
    rows = {split: read_manifest(p) for split, p in paths.items()}
    prep = read_prepare_report(man)
    for split in ("train", "valid", "test"):
        if not rows[split]:  # named by the corpus file it comes from (the manifest is ours)
            raise CaptionFormatError(
                f"{_source_of(hp, split)}: no usable clips in the {split} split{_why(prep, split)}"
            )
    return rows, {**prep, "data_state": state}


def _source_of(hp: dict[str, Any], split: str) -> Path:
    """The corpus file a split is read from (Clotho / the built-in corpus: its captions CSV; AudioCaps: its CSV)."""
    from slukd.data.captions import AUDIOCAPS_SPLITS, CLOTHO_SPLITS

    data = Path(hp["data_folder"])
    if hp["corpus"] == "audiocaps":
        return data / f"{AUDIOCAPS_SPLITS[split]}.csv"
    return data / f"clotho_captions_{CLOTHO_SPLITS[split]}.csv"


def _why(prep: dict[str, Any], split: str) -> str:
    skipped = (prep.get("skipped") or {}).get(split) or {}
    if not skipped:
        return " (the file has no clip rows)"
    return " (every row skipped: " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) + ")"


#: run-folder entries made from the data (deleted by data_changed: restart); the run record and logs stay
DATA_OUTPUTS = (
    "manifests",
    "audio_check.json",
    "vocab.json",
    "model.yaml",
    "save",
    "model.ckpt",
    "epoch_times.json",
    "train_log.txt",
    "predictions_test.jsonl",
    "metrics_test.json",
    "samples_test.md",
    "curves.png",
    "teacher_targets",
    "results.json",
    "test_only",
)


def prepare_captions(hp: dict[str, Any], out: str | Path, state: str | None = None) -> CaptionData:
    """Corpus, manifests, audio check and audio-only pools of a run (see the module docstring); ``state``: what
    :func:`check_caption_data` returned when the recipe called it first (else it is called here)."""
    from slukd.data.audio import check_and_drop_audio

    out = Path(out)
    rows, prep = _manifests(hp, out, state)
    limit = hp["limit_clips"]  # smoke tests: the first N clips of each split
    if limit:
        rows = {k: v[: int(limit)] for k, v in rows.items()}
    audio_only = rows.pop("audio_only")
    rows["pool"] = [r for r in audio_only if r["ID"].startswith(POOL_PREFIX)]
    rows["remainder"] = [r for r in audio_only if not r["ID"].startswith(POOL_PREFIX)]
    report: dict[str, Any] = {"prepare_skipped": prep.get("skipped", {})}
    if prep.get("data_state") in ("kept", "restarted"):  # a rerun after a data change says how it went on
        report["data_state"] = prep["data_state"]
    # audio_check: false still checks the test split (a bad test clip would otherwise crash after all training)
    checked, skipped, check = check_and_drop_audio(
        rows if hp["audio_check"] else {"test": rows["test"]}, None, out, sample_rate=hp["sample_rate"],
        max_seconds=hp["max_audio_seconds"], skip_bad=hp["skip_bad"],
        required=("train", "valid", "test") if hp["audio_check"] else ("test",), what="clip",
    )  # fmt: skip
    rows = {**rows, **checked}
    report.update(audio_checked=bool(hp["audio_check"]) or "test", audio_skipped=skipped, audio_notes=check.notes)
    from slukd.data.audio import duration_outliers

    long = duration_outliers({r["ID"]: float(r["duration"]) for r in rows["train"]}, factor=4.0)
    report["duration_outliers"] = len(long["outliers"])
    logger.info(
        "captioning data: %s",
        ", ".join(f"{k} {len(v)}" for k, v in rows.items()),
    )
    return CaptionData(rows=rows, report=report)


def audio_only_rows(hp: dict[str, Any], data: CaptionData) -> list[dict[str, Any]]:
    """The audio-only clips of a row (hparam ``audio_only``): none | pool | remainder | pool+remainder."""
    choice = hp["audio_only"]
    parts = {"none": [], "pool": ["pool"], "remainder": ["remainder"], "pool+remainder": ["pool", "remainder"]}
    if choice not in parts:
        raise ValueError(f"hparam audio_only must be one of {sorted(parts)}, got {choice!r}")
    rows = [r for part in parts[choice] for r in data.rows[part]]
    if choice != "none" and not rows:
        raise ValueError(f"audio_only: {choice} but the corpus has no such clips ({hp['data_folder']})")
    return rows


def build_vocab(hp: dict[str, Any], rows: list[dict[str, Any]]):
    """The word vocabulary of the captions in ``rows`` (the captions this row trains on, nothing else)."""
    from slukd.data.captions import WordVocab

    caps = [c for r in rows for c in r["captions"]]
    return WordVocab.build(caps, min_count=int(hp["vocab_min_count"]), max_words=int(hp["max_caption_words"]))
