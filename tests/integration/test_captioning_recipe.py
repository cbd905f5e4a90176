"""The captioning recipe on the tiny scenes tier (the shipped hparams/captioning_kd/base_tiny.yaml under the real
row files): teacher and KD student rows, audio-only pools, the run identity, errors, resumption after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import speechbrain as sb
import torch

from slukd.config import load_hparams
from slukd.utils.run import IncompatibleRunError
from tests.conftest import REPO  # noqa: E402
from tests.helpers_slu import recipe_module

HP = REPO / "hparams" / "captioning_kd"
TINY = REPO / "hparams" / "captioning_kd" / "base_tiny.yaml"


def cap_argv(row: str, tmp: Path, out: str, *extra: str) -> list[str]:
    """Recipe arguments of a row on the tiny base (one epoch; ``extra`` ``--key=value`` options replace these)."""
    base = [f"--base={TINY}", f"--data_folder={tmp / 'data'}", f"--output_folder={tmp / out}",
            f"--teacher_folder={tmp / 'teacher'}", "--number_of_epochs=1", "--noprogressbar"]  # fmt: skip
    keys = {e.split("=")[0] for e in extra}
    return [str(HP / f"{row}.yaml"), *[a for a in base if a.split("=")[0] not in keys], *extra]


def run(argv: list[str]) -> int:
    return recipe_module("captioning_kd").main(argv)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    assert run(cap_argv("teacher", tmp, "teacher", "--number_of_epochs=2")) == 0
    return tmp


def test_every_row_yaml_loads_on_both_bases():
    for path in sorted(HP.glob("*.yaml")):
        for base in ("base.yaml", "base_gpu.yaml"):
            hp, _ = load_hparams(path, f"base: {base}" if not path.name.startswith("base") else None)
            assert hp["role"] in ("teacher", "student"), path
            assert callable(hp["model"]) and hp["audio_only"] in ("none", "pool", "remainder", "pool+remainder")
    gpu, _ = load_hparams(HP / "student_seqkd.yaml", "base: base_gpu.yaml")
    assert gpu["tier"] == "full" and gpu["seq_kd_weight"] == 1.0 and gpu["vocab_min_count"] == 1


def test_teacher_row_and_rerun(teacher_run):
    tmp = teacher_run
    out = tmp / "teacher"
    res = json.loads((out / "results.json").read_text())
    assert res["role"] == "teacher" and res["test"]["n"] == 8 and res["eval_precision"] == "bf16"
    # steps: the budget (every epoch has the same steps); best_steps: the counter of the tested (best) checkpoint
    assert res["steps"] > 0 and res["steps"] % res["epochs"] == 0
    assert res["best_steps"] == res["steps"] // res["epochs"] * res["best_epoch"]
    assert res["device"]["device"] == "cpu" and len(res["code"]["fingerprint"]) == 16
    assert "captioning/brain.py" in res["code"]["files"] and "recipe:captioning_kd.py" in res["code"]["files"]
    for name in ("predictions_test.jsonl", "metrics_test.json", "samples_test.md", "vocab.json", "model.yaml",
                 "model.ckpt", "train_log.txt", "hparams_resolved.yaml"):  # fmt: skip
        assert (out / name).is_file(), name
    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(len(p["references"]) == 5 for p in preds)
    before = (out / "results.json").read_bytes()
    assert run(cap_argv("teacher", tmp, "teacher", "--number_of_epochs=2")) == 0  # finished: a no-op
    assert (out / "results.json").read_bytes() == before
    # another setting (even one the old hand-picked identity missed) on a finished folder: refused, naming it
    with pytest.raises(IncompatibleRunError, match=r"label_smoothing: 0\.1 -> 0\.2"):
        run(cap_argv("teacher", tmp, "teacher", "--number_of_epochs=2", "--label_smoothing=0.2"))
    with pytest.raises(IncompatibleRunError, match="data_folder"):
        run(cap_argv("teacher", tmp, "teacher", "--number_of_epochs=2", f"--data_folder={tmp / 'nowhere'}"))
    assert (out / "results.json").read_bytes() == before and "nowhere" not in (out / "run_info.json").read_text()
    # --test_only: the finished model decodes the test split again into test_only/, results untouched
    assert run([*cap_argv("teacher", tmp, "teacher", "--number_of_epochs=2"), "--test_only"]) == 0
    again = json.loads((out / "test_only" / "metrics_test.json").read_text())
    assert again["CIDEr_D"] == pytest.approx(json.loads(before)["test"]["CIDEr_D"], abs=1e-9)
    assert (out / "results.json").read_bytes() == before


def test_student_with_every_kd_term_and_audio_only(teacher_run):
    tmp = teacher_run
    argv = cap_argv("student_seqkd_contrastive_audio", tmp, "s_all", "--tok_kd_weight=1.0")
    assert run(argv) == 0
    res = json.loads((tmp / "s_all/results.json").read_text())
    assert res["kd"] == "seq+enc-contrastive+tok" and res["audio_only"] == "pool" and res["n_audio_only"] == 16
    log = (tmp / "s_all/train_log.txt").read_text()
    for part in ("kd_seq", "kd_enc", "kd_tok", "ao_seq", "ao_enc"):  # per-term KD losses in the training log
        assert f"train {part}:" in log, part
    assert "ao_tok" not in log  # token KD needs reference captions: not on audio-only clips
    caches = list((tmp / "s_all/teacher_targets").glob("targets_*.pt"))  # in the student's own folder
    assert len(caches) == 1 and not (tmp / "teacher/teacher_targets").exists()
    cache = torch.load(caches[0], weights_only=False)
    assert len(cache["hyps"]) == len(cache["emb"]) == 24 + 16  # every training clip and the pool
    # the targets come from the teacher as it was evaluated: its beam, length limit and precision
    assert cache["config"] == {"beam": 3, "max_len": 6, "precision": "bf16", "kind": "caption"}


def test_a_read_only_teacher_folder_is_only_read(teacher_run):
    """A shared teacher folder may be read-only: a student writes its teacher targets into its own folder."""
    tmp = teacher_run
    teacher = tmp / "teacher"

    def snapshot():
        return sorted((str(p.relative_to(teacher)), p.stat().st_mtime_ns) for p in teacher.rglob("*"))

    import logging

    for h in list(logging.getLogger().handlers):  # the teacher ran in this process; a student runs in its own
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).is_relative_to(teacher):
            logging.getLogger().removeHandler(h)
            h.close()
    before = snapshot()
    modes = {p: p.stat().st_mode for p in [teacher, *teacher.rglob("*")]}
    for p in modes:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert run(cap_argv("student_seqkd_mse", tmp, "s_ro")) == 0
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert snapshot() == before
    assert list((tmp / "s_ro/teacher_targets").glob("targets_*.pt"))


def test_precision_run_option_reaches_both_training_passes(teacher_run, monkeypatch):
    """``--precision=bf16`` puts the captioned pass and the audio-only pass of fit_batch under bf16 autocast."""
    from slukd.captioning.brain import CaptionBrain

    seen = {"train": [], "ao": []}
    forward, ao_loss = CaptionBrain.compute_forward, CaptionBrain.audio_only_loss

    def state():
        on = torch.is_autocast_enabled("cpu")
        return on, torch.get_autocast_dtype("cpu") if on else None

    def rec_forward(self, batch, stage):
        if stage == sb.Stage.TRAIN:
            seen["train"].append(state())
        return forward(self, batch, stage)

    def rec_ao(self, batch):
        seen["ao"].append(state())
        return ao_loss(self, batch)

    monkeypatch.setattr(CaptionBrain, "compute_forward", rec_forward)
    monkeypatch.setattr(CaptionBrain, "audio_only_loss", rec_ao)
    tmp = teacher_run
    assert run(cap_argv("student_seqkd_contrastive_audio", tmp, "s_bf16", "--precision=bf16")) == 0
    assert seen["train"] and seen["ao"]
    assert set(seen["train"]) == set(seen["ao"]) == {(True, torch.bfloat16)}


def test_a_debug_run_never_touches_the_real_folder(teacher_run):
    """SpeechBrain's ``--debug`` shortens the run: it writes to ``<output_folder>-debug``, its record says so, and
    the real folder stays empty, so a later real run (and the sweep) can never take its results for final."""
    tmp = teacher_run
    assert run(cap_argv("student_seqkd_mse", tmp, "s_dbg", "--debug")) == 0
    assert not (tmp / "s_dbg").exists()
    info = json.loads((tmp / "s_dbg-debug" / "run_info.json").read_text())
    assert info["identity"]["shortened"] is True and (tmp / "s_dbg-debug" / "results.json").is_file()


def test_data_scarce_pools_are_what_their_names_say(teacher_run):
    """pool: clips that never had captions (the teacher never saw captions of them); remainder: the training clips
    whose captions the row drops (the teacher saw theirs). The strict row never trains on the remainder."""
    from slukd.data.captions import read_manifest

    tmp = teacher_run
    for pool in ("pool", "remainder"):
        row = f"student_scarce_seqkd_mse_{pool}"
        assert run(cap_argv(row, tmp, row, "--captioned_fraction=0.5")) == 0
    res = {
        p: json.loads((tmp / f"student_scarce_seqkd_mse_{p}/results.json").read_text()) for p in ("pool", "remainder")
    }
    assert res["pool"]["audio_only"] == "pool" and res["remainder"]["audio_only"] == "remainder"
    assert res["pool"]["n_train"] == res["remainder"]["n_train"] == 12  # half of the 24 captioned clips
    assert res["pool"]["n_audio_only"] == 16 and res["remainder"]["n_audio_only"] == 12
    teacher_train = {r["ID"] for r in read_manifest(tmp / "teacher/manifests/train.csv")}
    kept = {r["ID"] for r in read_manifest(tmp / "student_scarce_seqkd_mse_pool/manifests/train.csv")}
    dropped = teacher_train - kept
    assert len(dropped) == 12
    pool_ids = {r["ID"] for r in read_manifest(tmp / "student_scarce_seqkd_mse_pool/manifests/audio_only.csv")
                if r["ID"].startswith("audio_only_")}  # fmt: skip
    assert pool_ids and not pool_ids & teacher_train  # the teacher never saw captions of the pool
    # the remainder row's audio-only clips are exactly the training clips whose captions it dropped
    from slukd.captioning.prepare import audio_only_rows, prepare_captions
    from slukd.config import load_hparams

    row = "student_scarce_seqkd_mse_remainder"
    argv = cap_argv(row, tmp, "remainder_check", "--captioned_fraction=0.5")
    hp, _ = load_hparams(argv[0], argv[1:])
    remainder = {r["ID"] for r in audio_only_rows(hp, prepare_captions(hp, tmp / "remainder_check"))}
    assert remainder == dropped


def test_supervised_student_builds_its_vocabulary_from_its_own_captions(teacher_run):
    from slukd.data.captions import WordVocab, read_manifest

    tmp = teacher_run
    assert run(cap_argv("student_scarce_supervised", tmp, "sup", "--captioned_fraction=0.5")) == 0
    vocab = WordVocab.load(tmp / "sup/vocab.json")
    own = read_manifest(tmp / "sup/manifests/train.csv")
    words = {w for r in own for c in r["captions"] for w in c.split()}
    assert set(vocab.itos[4:]) <= {w.strip(".,").lower() for w in words}


def test_a_data_change_before_a_rerun_stops_with_what_changed(teacher_run, tmp_path):
    """An unfinished captioning run (killed before its results) whose corpus changed: the rerun stops naming the
    change; --data_changed=restart starts over on the new data."""
    import csv
    import shutil

    from slukd.data.fingerprint import DataChangedError

    data = tmp_path / "data"
    shutil.copytree(teacher_run / "data", data)
    argv = cap_argv("student_supervised", teacher_run, "unused", f"--data_folder={data}",
                    f"--output_folder={tmp_path / 'run'}")  # fmt: skip
    assert run(argv) == 0
    (tmp_path / "run" / "results.json").unlink()  # as if killed after training, before its results
    dev = data / "clotho_captions_development.csv"
    rows = list(csv.reader(dev.open(newline="")))
    rows[1][1] += " Then silence."  # one caption fixed between the kill and the rerun
    with dev.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataChangedError, match="clotho_captions_development.csv changed"):
        run(argv)
    assert not (tmp_path / "run" / "results.json").exists()
    assert run([*argv, "--data_changed=restart"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"]["n"] == 8


def test_student_without_teacher_is_a_clear_error(tmp_path):
    argv = cap_argv("student_seqkd", tmp_path, "s", f"--teacher_folder={tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match="Train the teacher row first"):
        run(argv)


@pytest.mark.slow
def test_recipe_killed_and_rerun_finishes_with_same_results(tmp_path):
    """The real recipe: kill -9 at every phase (teacher targets, training, test decoding), rerun the same command
    each time, compare with an uninterrupted run."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(REPO / "recipes/captioning_kd.py"),
                    *cap_argv("teacher", tmp_path, "teacher", "--number_of_epochs=2")], env=env, check=True,
                   capture_output=True)  # fmt: skip

    def cmd(out):
        return [
            sys.executable,
            str(REPO / "recipes/captioning_kd.py"),
            *cap_argv("student_seqkd_contrastive_audio", tmp_path, out, "--number_of_epochs=3", "--eval_batch_size=4"),
        ]

    subprocess.run(cmd("a"), env=env, check=True, capture_output=True)
    for point in ("train:1:2", "train:1:7", "eval:1:1"):
        res = subprocess.run(cmd("b"), env={**env, "SLUKD_DIE_AT": point}, capture_output=True, text=True)
        assert res.returncode == -signal.SIGKILL, (point, res.stderr[-2000:])
    subprocess.run(cmd("b"), env=env, check=True, capture_output=True)
    a = json.loads((tmp_path / "a/results.json").read_text())
    b = json.loads((tmp_path / "b/results.json").read_text())
    assert a["test"]["CIDEr_D"] == b["test"]["CIDEr_D"] and a["steps"] == b["steps"]
    assert (tmp_path / "a/predictions_test.jsonl").read_text() == (tmp_path / "b/predictions_test.jsonl").read_text()
    assert not list((tmp_path / "b").rglob("*.tmp"))
