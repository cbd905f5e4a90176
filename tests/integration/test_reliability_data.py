"""Reliability, round two: a run knows its data (a change between kill and rerun stops it, naming the change, with
explicit choices), settings are checked before any work, bad or very long clips are handled and counted in the
results, files keep the user's umask and write failures name the path, --test_only never touches the results,
and a two-process (torchrun) run killed mid-training resumes to the same results."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from slukd.config import HparamValueError
from slukd.data.fingerprint import DataChangedError
from tests.conftest import REPO
from tests.helpers_slu import RECIPE, comparable_results, main, make_corpus, tiny_argv, write_order


def test_a_data_change_between_runs_stops_with_what_changed_and_the_choices(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 3, "devel": 1, "test": 1})
    order, out = write_order(tmp_path), tmp_path / "run"
    argv = tiny_argv(corpus, out, order, "seq_kd", "--task=1")
    assert main(argv) == 0
    (corpus / "slurp_real" / "audio-2.flac").unlink()  # an item removed between the kill and the rerun
    train = corpus / "dataset" / "slurp" / "train.jsonl"
    train.write_text(train.read_text().replace("send an email", "send a mail", 1))  # and a line fixed
    with pytest.raises(DataChangedError) as err:
        main(tiny_argv(corpus, out, order, "seq_kd"))
    msg = str(err.value)
    assert "train.jsonl changed" in msg and "1 audio file(s) removed or unreadable (audio-2.flac)" in msg
    assert "--data_changed=restart" in msg and "--data_changed=keep" in msg
    assert not (out / "task2").exists()  # stopped before any work
    # keep: continue on the data prepared at the start (its manifests); the gone item is skipped and counted
    assert main(tiny_argv(corpus, out, order, "seq_kd", "--data_changed=keep")) == 0
    step2 = json.loads((out / "results" / "step2.json").read_text())
    assert step2["data"]["data_state"] == "kept" and step2["data"]["audio_skipped"]["train"] == {"missing": 1}
    assert "send an email" in (out / "manifests" / "train.csv").read_text()  # the old manifests
    # restart: the run's outputs are deleted and it starts over on the new data
    assert main(tiny_argv(corpus, out, order, "seq_kd", "--data_changed=restart")) == 0
    assert "send a mail" in (out / "manifests" / "train.csv").read_text()
    assert json.loads((out / "results" / "step1.json").read_text())["data"]["data_state"] == "restarted"


def test_settings_are_checked_before_any_work(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    out = tmp_path / "run"
    for bad, expected in (("--later_task_epochs=one", "later_task_epochs.*int>=1 or list or null, got 'one'"),
                          ("--memory=herd", "memory.*'none' or 'random' or 'herding'"),
                          ("--memory_fraction=1.5", "memory_fraction.*float>=0<=1"),
                          ("--lr=-1", "lr.*float>0")):  # fmt: skip
        with pytest.raises(HparamValueError, match=expected):
            main(tiny_argv(corpus, out, write_order(tmp_path), "seq_kd", bad))
        assert not out.exists()


def test_umask_permissions_and_write_failures_name_the_path(tmp_path):
    from slukd.utils.io import WriteError, atomic_write_json

    old = os.umask(0o022)
    try:
        p = atomic_write_json(tmp_path / "a" / "x.json", {"a": 1})
        assert stat.S_IMODE(p.stat().st_mode) == 0o644  # what open() would give, not mkstemp's 0600
        os.umask(0o002)
        assert stat.S_IMODE(atomic_write_json(tmp_path / "y.json", {}).stat().st_mode) == 0o664
    finally:
        os.umask(old)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode
            pytest.skip("running as a user who can write into read-only folders")
        with pytest.raises(WriteError, match=f"cannot write {ro / 'z.json'}"):
            atomic_write_json(ro / "z.json", {})
    finally:
        ro.chmod(0o700)


def test_write_failure_in_a_run_goes_to_its_log(tmp_path, monkeypatch):
    import slukd.utils.io as io_mod
    from tests.helpers_slu import recipe_module

    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    out = tmp_path / "run"
    real = io_mod.atomic_write

    def full_disk(path, write):
        if str(path).endswith("predictions.jsonl"):
            raise io_mod.WriteError(28, f"cannot write {path}: No space left on device")
        return real(path, write)

    monkeypatch.setattr(io_mod, "atomic_write", full_disk)
    rc = recipe_module("slurp_incremental")
    with pytest.raises(SystemExit) as exit_:
        sys.exit(__import__("slukd.experiment", fromlist=["main_guard"]).main_guard(
            rc.main, tiny_argv(corpus, out, write_order(tmp_path), "finetune"), doc="x"))  # fmt: skip
    assert exit_.value.code == 2
    log = (out / "log.txt").read_text()
    assert "run stopped: WriteError" in log and "predictions.jsonl: No space left on device" in log


def test_captioning_bad_and_very_long_clips_are_handled_before_training(tmp_path):
    from tests.integration.test_captioning_recipe import cap_argv, run

    assert run(cap_argv("student_supervised", tmp_path, "warm")) == 0  # makes the tiny corpus
    data = tmp_path / "data"
    dev = sorted((data / "development").glob("*.flac"))
    dev[0].write_bytes(dev[0].read_bytes()[:300])  # truncated
    wav, sr = sf.read(dev[1])
    sf.write(dev[1], np.tile(wav, 20), sr)  # ~20x longer than the others
    with pytest.raises(Exception, match=dev[0].name):  # skip_bad false: stops before training, naming the file
        run(cap_argv("student_supervised", tmp_path, "strict", "--skip_bad=false"))
    assert not (tmp_path / "strict" / "save").exists()
    assert run(cap_argv("student_supervised", tmp_path, "lenient", "--max_audio_seconds=12.0")) == 0
    res = json.loads((tmp_path / "lenient" / "results.json").read_text())
    assert sum(res["data"]["audio_skipped"]["train"].values()) == 1  # the truncated clip: skipped, counted
    assert res["data"]["audio_notes"]["cropped"] >= 1 and res["data"]["duration_outliers"] >= 1
    assert res["n_train"] == 23


def test_test_only_scores_finished_tasks_again_without_touching_the_results(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    other = make_corpus(tmp_path / "c2", {"train": 1, "devel": 1, "test": 2})
    order, out = write_order(tmp_path), tmp_path / "run"
    assert main(tiny_argv(corpus, out, order, "seq_kd")) == 0
    before = comparable_results(out)
    assert main([*tiny_argv(corpus, out, order, "seq_kd"), "--test_only"]) == 0
    again = json.loads((out / "test_only" / "results" / "step2.json").read_text())
    assert again["seen"] == json.loads((out / "results" / "step2.json").read_text())["seen"]
    assert main([*tiny_argv(corpus, out, order, "seq_kd"), "--test_only", f"--test_data_folder={other}",
                 "--task=1"]) == 0  # fmt: skip
    new = json.loads((out / "test_only" / "results" / "step1.json").read_text())
    assert new["test_data"] == str(other) and new["seen"]["n"] == 4  # 2 scenarios x 2 test items of the new set
    assert comparable_results(out) == before


@pytest.mark.slow
def test_torchrun_run_killed_during_training_resumes_to_the_same_results(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 3, "devel": 1, "test": 1})
    order = write_order(tmp_path)

    def cmd(out):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "--max-restarts=0", "--monitor-interval=1", str(RECIPE),
                *tiny_argv(corpus, out, order, "seq_kd", "--number_of_epochs=3")]  # fmt: skip

    env = {k: v for k, v in os.environ.items() if k != "SLUKD_DIE_AT"}
    env["OMP_NUM_THREADS"] = "1"
    assert subprocess.run(cmd(tmp_path / "a"), env=env, capture_output=True, timeout=600, cwd=REPO).returncode == 0
    # one worker SIGKILLs itself at its 3rd training batch of task 2; the job ends (the launcher stops the other
    # worker; should it hang in a collective, the test kills the whole process group, as a scheduler would)
    proc = subprocess.Popen(cmd(tmp_path / "b"), env={**env, "SLUKD_DIE_AT": "train:2:3"}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    logs = "".join(p.read_text() for p in (tmp_path / "b").glob("log*.txt"))
    assert "SLUKD_DIE_AT=train:2:3" in logs
    assert (tmp_path / "b" / "task1" / "DONE").is_file() and not (tmp_path / "b" / "task2" / "DONE").exists()
    res = subprocess.run(cmd(tmp_path / "b"), env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert comparable_results(tmp_path / "a") == comparable_results(tmp_path / "b")
