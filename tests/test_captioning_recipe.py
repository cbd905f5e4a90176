"""The captioning recipe on the tiny scenes tier: teacher and KD student rows, resume, errors, exact resumption."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slukd.captioning.data import iterate_batches
from slukd.captioning.models import build_model
from slukd.captioning.report import write_report
from slukd.captioning.run import load_config, prepare_data, run
from slukd.captioning.train import CaptionTrainer
from slukd.data.captions import WordVocab
from slukd.utils.run import IncompatibleRunError

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "hparams/captioning_kd/tiny_smoke.yaml"


def _cfg(tmp: Path, *extra: str) -> dict:
    return load_config(
        SMOKE,
        [f"--data_folder={tmp / 'data'}", f"--teacher_folder={tmp / 'teacher'}", f"--output_folder={tmp / 'teacher'}"]
        + list(extra),
    )


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    res = run(_cfg(tmp))
    return tmp, res


def test_every_row_yaml_loads():
    for path in sorted((REPO / "hparams/captioning_kd").glob("*.yaml")):
        if path.name.endswith("_base.yaml"):
            continue
        cfg = load_config(path)
        assert cfg["role"] in ("teacher", "student"), path
        build_model(cfg[f"{cfg['role']}_model"], 50)
    with pytest.raises(KeyError, match="unknown key"):
        load_config(SMOKE, ["--train.epochz=3"])
    assert load_config(SMOKE, ["--train.epochs", "7"])["train"]["epochs"] == 7


def test_teacher_row_and_rerun(teacher_run):
    tmp, res = teacher_run
    out = tmp / "teacher"
    assert res["role"] == "teacher" and res["steps"] == 3 and res["test"]["n"] == 8
    for name in ("results.json", "predictions_test.jsonl", "metrics_test.json", "samples_test.md", "vocab.json"):
        assert (out / name).is_file(), name
    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(len(p["references"]) == 5 for p in preds)
    assert run(_cfg(tmp)) == res  # finished: the rerun reads the results
    with pytest.raises(IncompatibleRunError, match="seed"):
        run(_cfg(tmp, "--seed=5", f"--output_folder={out}"))


def test_student_with_every_kd_term_and_audio_only(teacher_run):
    tmp, teacher = teacher_run
    cfg = _cfg(
        tmp, "--row=s_all", "--role=student", f"--output_folder={tmp / 's_all'}", "--kd.seq=1", "--kd.enc=1",
        "--kd.tok=1", "--audio_only=true",
    )  # fmt: skip
    res = run(cfg)
    assert res["kd"] == "seq+tok+enc-contrastive" and res["audio_only"] and res["n_audio_only"] == 16
    hist = json.loads((tmp / "s_all/train/history.json").read_text())
    assert {"loss_kd_seq", "loss_kd_enc", "loss_kd_tok", "loss_ao_seq", "loss_ao_enc"} <= set(hist[0])
    cache = list((tmp / "teacher/teacher_targets").glob("pseudo_*.json"))
    assert len(cache) == 1 and json.loads(cache[0].read_text())["n"] == 24 + 16
    df = write_report([tmp], tmp / "report")
    assert set(df["row"]) == {"smoke_teacher", "s_all"}
    assert (tmp / "report/captioning_results.md").read_text().count("\n") == 4


def test_student_without_teacher_is_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path, "--role=student", "--kd.seq=1", f"--teacher_folder={tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match="Train the teacher row first"):
        run(cfg)


def test_interrupted_training_resumes_to_the_same_weights(teacher_run, tmp_path):
    tmp, _ = teacher_run
    cfg = _cfg(tmp)
    rows = prepare_data(cfg, tmp_path)
    vocab = WordVocab.load(tmp / "teacher/vocab.json")
    hp = dict(cfg["train"], seed=0, epochs=2)

    def train(stage, crash_at=None):
        torch.manual_seed(0)
        model = build_model(cfg["student_model"], vocab.vocab_size)

        def validate(m):
            if crash_at is not None and trainer.epoch == crash_at:
                raise KeyboardInterrupt  # killed after the epoch's checkpoint of the previous epoch was written
            return 0.0

        trainer = CaptionTrainer(model, vocab, tmp_path / stage, hp, validate_fn=validate)
        trainer.fit(rows["train"])
        return model

    straight = train("straight")
    with pytest.raises(KeyboardInterrupt):
        train("killed", crash_at=2)
    torch.manual_seed(123)  # a restarted process has other RNG state: the checkpoint must restore it
    resumed = train("killed")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_batches_are_deterministic(teacher_run):
    tmp, _ = teacher_run
    rows = prepare_data(_cfg(tmp), tmp / "teacher")["train"]
    a = [b.ids for b in iterate_batches(rows, 8, seed=1, epoch=3)]
    b = [b.ids for b in iterate_batches(rows, 8, seed=1, epoch=3)]
    c = [b.ids for b in iterate_batches(rows, 8, seed=1, epoch=4)]
    assert a == b and a != c


@pytest.mark.slow
def test_recipe_killed_and_rerun_finishes_with_same_results(tmp_path):
    """The real recipe: kill -9 during training, rerun the same command, compare with an uninterrupted run."""
    common = [f"--data_folder={tmp_path / 'data'}", "--train.epochs=4", "--eval.meteor=false"]

    def cmd(out):
        return [sys.executable, str(REPO / "recipes/captioning_kd.py"), str(SMOKE), f"--output_folder={out}"] + common

    subprocess.run(cmd(tmp_path / "a"), check=True, cwd=REPO, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "b"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "b/train/ckpt.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    subprocess.run(cmd(tmp_path / "b"), check=True, cwd=REPO, capture_output=True)
    a = json.loads((tmp_path / "a/results.json").read_text())
    b = json.loads((tmp_path / "b/results.json").read_text())
    assert a["test"]["CIDEr_D"] == b["test"]["CIDEr_D"] and a["steps"] == b["steps"]
    pa = (tmp_path / "a/predictions_test.jsonl").read_text()
    assert pa == (tmp_path / "b/predictions_test.jsonl").read_text()
