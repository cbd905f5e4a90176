"""Reliability, round three (issue 28): a finished run notices changed data in both recipes and in the sweep, one
writer per run folder (concurrent runs and concurrent sweeps), clean one-line file-system failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slukd.data.fingerprint import DataChangedError
from slukd.utils.lock import LOCK_NAME, RunLockedError, hold_run_lock, release_all
from tests.conftest import REPO
from tests.helpers_slu import RECIPE, TINY, make_corpus, tiny_argv, write_order

# ---------------------------------------------------------------------------------------------------- 28.1


def test_a_finished_captioning_run_notices_changed_data(tmp_path):
    """Edited evaluation captions, then an audio file replaced in place: the finished run stops naming the change
    (it used to print the old CIDEr-D as finished earlier); --data_changed=restart runs it again on the new data."""
    import csv

    import numpy as np
    import soundfile as sf

    from tests.integration.test_captioning_recipe import cap_argv, run

    argv = cap_argv("student_supervised", tmp_path, "run")
    assert run(argv) == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert run(argv) == 0  # unchanged data: finished earlier
    evaluation = tmp_path / "data" / "clotho_captions_evaluation.csv"
    rows = list(csv.reader(evaluation.open(newline="")))
    rows[1][1] = "a completely different caption"
    with evaluation.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataChangedError, match="clotho_captions_evaluation.csv changed"):
        run(argv)
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == first  # nothing touched
    assert run([*argv, "--data_changed=restart"]) == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["data"]["data_state"] == "restarted"
    clip = sorted((tmp_path / "data" / "evaluation").glob("*.flac"))[0]
    wav, sr = sf.read(clip)
    sf.write(clip, np.zeros_like(wav), sr)  # replaced in place (same name)
    with pytest.raises(DataChangedError, match=r"1 audio file\(s\) modified"):
        run(argv)
    assert run([*argv, "--data_changed=keep"]) == 0  # keep: the finished run stays finished


# ---------------------------------------------------------------------------------------------------- 28.4
_HOLDER = """
import sys, time
from slukd.utils.lock import hold_run_lock
hold_run_lock(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_folder_has_one_writer_and_a_killed_holder_frees_it(tmp_path):
    folder = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), "--a-flag"], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as err:
            hold_run_lock(folder)
        msg = str(err.value)
        assert f"pid {holder.pid} on host" in msg and "--a-flag" in msg and str(folder) in msg
        assert "\n" not in msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    hold_run_lock(folder)  # the kernel dropped the killed holder's lock
    release_all()


def test_two_runs_started_together_into_one_folder_one_stops_with_one_line(tmp_path):
    """The same command twice into one folder (it used to end in "Checkpoint does not appear valid for deletion"):
    the second stops at once with one line naming the first, which goes on."""
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    out = tmp_path / "run"
    argv = tiny_argv(corpus, out, write_order(tmp_path), "finetune", "--number_of_epochs=200")
    cmd = [sys.executable, str(RECIPE), *argv]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / LOCK_NAME).is_file() or f'"pid": {first.pid}' not in (out / LOCK_NAME).read_text():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert first.poll() is None  # the first run is still training
        assert second.returncode == 2 and "Traceback" not in second.stderr
        err_lines = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(err_lines) == 1 and "is in use by another run" in err_lines[0], second.stderr[-3000:]
        assert f"pid {first.pid} on host" in err_lines[0] and "slurp_incremental.py" in err_lines[0]
    finally:
        first.kill()
        first.wait()
    assert f'"pid": {first.pid},' in (out / LOCK_NAME).read_text()  # the second run wrote nothing there


# ---------------------------------------------------------------------------------------------------- 28.4 + 28.2
def _sweep(corpus: Path, out: Path, order: Path, *extra: str) -> list[str]:
    tiny = [a for a in TINY if not a.startswith("--first_task_cache")]
    return [sys.executable, "-m", "slukd.cli", "sweep", "slu", "--rows", "finetune", "--seeds", "0", "1",
            "--splits", "slurp3", "--jobs", "1", "--threads", "1", "--out", str(out), *extra, "--",
            f"--data_folder={corpus}", f"--order={order}", *tiny]  # fmt: skip


def test_two_sweeps_into_one_folder_train_each_run_once_and_a_sweep_checks_finished_runs_data(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    order, out = write_order(tmp_path), tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen(_sweep(corpus, out, order), cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for seed in (0, 1):
        name = f"slurp3/finetune/seed{seed}"
        starts = sum(o.count(f"sweep: start {name} ") for o in outputs)
        assert starts == 1, (name, outputs)  # trained once, by one of the two sweeps
        assert (out / "slurp3" / "finetune" / f"seed{seed}" / "task2" / "DONE").is_file()
    # 28.2: lines removed from test.jsonl: the sweep does not call the finished runs done
    test = corpus / "dataset" / "slurp" / "test.jsonl"
    test.write_text("".join(test.read_text().splitlines(keepends=True)[:-2]))
    again = subprocess.run(_sweep(corpus, out, order), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    assert "its data changed since" in again.stderr and "test.jsonl changed" in again.stderr
    assert "finished earlier: skipped" not in again.stderr
    log = (out / "logs" / "slurp3__finetune__seed0.log").read_text()
    assert "test.jsonl changed" in log and "--data_changed=restart" in log
    # the user's choice reaches the runs: restart on the new data
    redo = subprocess.run(_sweep(corpus, out, order, "--set", "data_changed=restart"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert redo.returncode == 0, redo.stdout + redo.stderr
    step = json.loads((out / "slurp3" / "finetune" / "seed0" / "results" / "step1.json").read_text())
    assert step["data"]["data_state"] == "restarted"


# ---------------------------------------------------------------------------------------------------- 28.5
def _guarded(argv: list[str]) -> int:
    from slukd.experiment import main_guard
    from tests.helpers_slu import recipe_module

    return main_guard(recipe_module("slurp_incremental").main, argv, doc="x")


def test_a_full_disk_inside_the_checkpointer_save_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    import shutil

    import torch

    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    out = tmp_path / "run"
    argv = tiny_argv(corpus, out, write_order(tmp_path), "finetune")
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # what torch's writer does on a full disk: a cryptic RuntimeError
        if isinstance(f, (str, os.PathLike)) and "CKPT+" in str(f):
            Path(f).write_bytes(b"\0" * 64)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr("slukd.train.checkpoint.shutil.disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    assert _guarded(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write checkpoint" in errors[0] and str(out / "task1" / "save") in errors[0]
    assert "No space left on device" in errors[0]
    log = (out / "log.txt").read_text()
    assert "run stopped: WriteError: cannot write checkpoint" in log and "No space left on device" in log
    assert not [d for d in (out / "task1" / "save").glob("CKPT+*")]  # the half-written checkpoint is gone
    monkeypatch.undo()  # space freed: the same command finishes
    assert _guarded(argv) == 0 and (out / "task2" / "DONE").is_file()


def test_a_read_only_output_folder_is_one_line_naming_the_path(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    out = tmp_path / "run"
    argv = tiny_argv(corpus, out, write_order(tmp_path), "finetune")
    assert _guarded([*argv, "--task=1"]) == 0
    release_all()
    capsys.readouterr()
    made_read_only = subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode == 0
    if not made_read_only:
        out.chmod(0o500)
    try:
        if os.access(out, os.W_OK) and not made_read_only:
            pytest.skip("cannot make a read-only folder here (root without chattr)")
        assert _guarded(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"cannot write {out}" in errors[0], errors
        assert "Operation not permitted" in errors[0] or "Permission denied" in errors[0]
        assert "run stopped: WriteError: cannot write" in (out / "log.txt").read_text()
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)
        out.chmod(0o755)
    assert (out / "task1" / "DONE").is_file()  # nothing lost
    if not made_read_only:
        return
    save = out / "task2" / "save"  # read-only where the checkpointer saves (SpeechBrain's own writes)
    save.mkdir(parents=True)
    subprocess.run(["chattr", "+i", str(save)], check=True)
    try:
        assert _guarded(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors == [f"error: cannot write checkpoint {save}: Operation not permitted (earlier checkpoints are "
                          "kept)"], errors  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(save)], capture_output=True)
    assert _guarded(argv) == 0 and (out / "task2" / "DONE").is_file()


def test_a_log_file_that_cannot_be_written_is_one_warning_not_a_traceback_per_record(tmp_path, capsys):
    import errno
    import logging

    from slukd.utils.logging import _RunLogHandler

    handler = _RunLogHandler(tmp_path / "log.txt")
    root = logging.getLogger()
    root.addHandler(handler)

    class FullDisk:
        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    handler.stream = FullDisk()
    try:
        for k in range(7):
            logging.getLogger("x").warning("record %d", k)
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert err.count(f"cannot write {tmp_path / 'log.txt'}: No space left on device") == 1


# ---------------------------------------------------------------------------------------------------- 28.6
def _clotho(root: Path, n: int = 3) -> Path:
    """A small Clotho-layout corpus: 3 splits of ``n`` one-second clips with 5 captions each."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for cname in ("development", "validation", "evaluation"):
        (root / cname).mkdir(parents=True)
        lines = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5"]
        for k in range(n):
            sf.write(root / cname / f"{cname}_{k}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
            lines.append(f"{cname}_{k}.wav," + ",".join(f"a sound number {k} take {j}" for j in range(5)))
        (root / f"clotho_captions_{cname}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_captioning_skip_bad_false_stops_on_every_bad_row_like_slu(tmp_path):
    from slukd.data.captions import CaptionFormatError, prepare_clotho

    cases = {
        "missing": lambda d, csv: csv.write_text(csv.read_text() + "gone.wav,a,b,c,d,e\n"),
        "empty": lambda d, csv: ((d / "empty.wav").write_bytes(b""),
                                 csv.write_text(csv.read_text() + "empty.wav,a,b,c,d,e\n")),
        "not_audio": lambda d, csv: ((d / "notes.wav").write_text("not audio"),
                                     csv.write_text(csv.read_text() + "notes.wav,a,b,c,d,e\n")),
        "caption_count": lambda d, csv: csv.write_text(csv.read_text() + "validation_0.wav,a,b,c,,\n"),
    }  # fmt: skip
    expected = {"missing": "gone.wav.*missing_audio", "empty": "empty.wav.*unreadable_audio",
                "not_audio": "notes.wav.*unreadable_audio", "caption_count": "has 3 captions, not 5"}  # fmt: skip
    for name, spoil in cases.items():
        data = _clotho(tmp_path / name)
        spoil(data / "validation", data / "clotho_captions_validation.csv")
        assert prepare_clotho(data, tmp_path / f"{name}_lenient")["valid"].is_file()  # skip_bad: skipped, counted
        with pytest.raises(CaptionFormatError, match=f"clotho_captions_validation.csv:5: .*{expected[name]}"):
            prepare_clotho(data, tmp_path / f"{name}_strict", skip_bad=False)


def test_an_empty_split_is_one_line_naming_the_source_file(tmp_path, capsys):
    from slukd.experiment import main_guard
    from tests.helpers_slu import recipe_module
    from tests.integration.test_captioning_recipe import cap_argv

    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    (corpus / "dataset" / "slurp" / "devel.jsonl").write_text("")
    assert _guarded(tiny_argv(corpus, tmp_path / "run", write_order(tmp_path), "finetune")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {corpus / 'dataset' / 'slurp' / 'devel.jsonl'}: no usable items in the devel split "
                      "(the file has no item lines)"]  # fmt: skip
    data = _clotho(tmp_path / "clotho")
    valid = data / "clotho_captions_validation.csv"
    valid.write_text(valid.read_text().splitlines()[0] + "\n")
    argv = cap_argv("student_supervised", tmp_path, "cap", f"--data_folder={data}", "--corpus=clotho")
    assert main_guard(recipe_module("captioning_kd").main, argv, doc="x") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {valid}: no usable clips in the valid split (the file has no clip rows)"]


def test_scoring_an_empty_predictions_file_is_an_error(tmp_path, capsys):
    from slukd.metrics.slurp_scorer import cli_main

    corpus = make_corpus(tmp_path / "c", {"train": 1, "devel": 1, "test": 1})
    empty = tmp_path / "pred.jsonl"
    empty.write_text("")
    assert cli_main(["--gold", str(corpus / "dataset/slurp/test.jsonl"), "--pred", str(empty)]) == 1
    assert f"{empty}: no predictions" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"file": "nowhere.flac", "scenario": "qa", "action": "factoid", "entities": []}) + "\n")
    assert cli_main(["--gold", str(corpus / "dataset/slurp/test.jsonl"), "--pred", str(other)]) == 1
    assert "none of its 1 predictions matches a gold item" in capsys.readouterr().err


def test_a_bad_test_clip_is_found_before_training_without_the_audio_check_and_test_only_counts_drops(tmp_path):
    from slukd.data.audio import BadAudioError
    from tests.helpers_slu import main

    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    test = [json.loads(x) for x in (corpus / "dataset/slurp/test.jsonl").read_text().splitlines()]
    bad = corpus / "slurp_real" / test[0]["recordings"][0]["file"]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    order = write_order(tmp_path)
    with pytest.raises(BadAudioError, match=bad.name):
        main(tiny_argv(corpus, tmp_path / "strict", order, "finetune", "--audio_check=false", "--skip_bad=false"))
    assert not (tmp_path / "strict" / "task1" / "save").exists()  # before any training
    out = tmp_path / "run"
    assert main(tiny_argv(corpus, out, order, "finetune", "--audio_check=false")) == 0
    step = json.loads((out / "results" / "step2.json").read_text())
    assert step["data"]["audio_checked"] == "test" and sum(step["data"]["audio_skipped"]["test"].values()) == 1
    assert main([*tiny_argv(corpus, out, order, "finetune", "--audio_check=false"), "--test_only"]) == 0
    again = json.loads((out / "test_only" / "results" / "step2.json").read_text())
    assert again["dropped"]["n_dropped"] == 1 and sum(again["dropped"]["audio_skipped"].values()) == 1


def test_a_folder_given_as_audio_and_a_key_given_twice_have_their_own_messages(tmp_path, capsys):
    from slukd.data.audio import AudioError, load_audio

    with pytest.raises(AudioError, match="a folder, not an audio file"):
        load_audio(tmp_path, 16000)
    corpus = make_corpus(tmp_path / "c", {"train": 1, "devel": 1, "test": 1})
    argv = [*tiny_argv(corpus, tmp_path / "run", write_order(tmp_path), "finetune"), "--lr=0.1", "--lr", "0.2"]
    assert _guarded(argv) == 2
    err = capsys.readouterr().err
    assert "error: command-line override --lr is given twice ('0.1' and '0.2'); give it once" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "run_info.json").exists()


def test_a_cropped_long_clip_is_not_counted_as_skipped_in_the_report():
    from slukd.report.continual import _run_notes, long_clip_counts, skip_counts

    data = {"duration_outliers": 1, "audio_notes": {"cropped": 1}, "audio_skipped": {"train": {}}}
    summary = {"valid_scope": "seen", "skipped": skip_counts(data), "kept_long": long_clip_counts(data)}
    notes = "\n".join(_run_notes(summary))
    assert "Items skipped or not scorable: 0." in notes
    assert "Long clips (kept, not skipped): 1 longer than 4x the median duration; 1 cropped" in notes
