"""The class-incremental SLU recipe end to end on a tiny generated SLURP-layout corpus (tones, 4 scenarios)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slukd.config import load_hparams
from slukd.continual import TaskOrderError
from tests.helpers_slu import HP, REPO, TINY, VOLATILE, main, make_corpus
from tests.helpers_slu import tone_argv as _tone_argv
from tests.helpers_slu import write_order as _order


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("slurp"), {"train": 3, "devel": 1, "test": 1})


def test_row_files_load_and_unknown_key_fails():
    hp, text = load_hparams(HP / "seq_kd.yaml", "seed: 3")
    assert hp["row"] == "seq_kd" and hp["seed"] == 3 and hp["seq_kd_weight"] == 1.0
    assert hp["output_folder"] == "results/slurp_incremental/seq_kd/seed3"
    assert "seq_kd_weight: 1.0" in text
    for row in ("joint", "finetune", "rehearsal_random", "rehearsal_herding", "rehearsal_5pct", "audio_kd", "tok_kd",
                "audio_seq_kd", "seq_tok_kd", "all_kd"):  # fmt: skip
        assert load_hparams(HP / f"{row}.yaml")[0]["row"] == row
    with pytest.raises(KeyError):
        load_hparams(HP / "seq_kd.yaml", "no_such_key: 1")
    gpu, _ = load_hparams(HP / "seq_kd.yaml", "base: base_gpu.yaml")  # --base base_gpu.yaml
    assert gpu["row"] == "seq_kd" and gpu["corpus"] == "slurp" and gpu["d_model"] == 256
    assert gpu["memory"] == "herding" and gpu["ctc_weight"] == 0.5  # from the row file and base.yaml below it


def test_two_tasks_seq_kd_smoke_and_resume(tmp_path, tiny_corpus):
    out = tmp_path / "run"
    argv = [str(HP / "seq_kd.yaml"), f"--data_folder={tiny_corpus}", f"--output_folder={out}",
            f"--order={_order(tmp_path)}", *TINY]  # fmt: skip
    # --task 2 before task 1 is a clear error
    with pytest.raises(TaskOrderError, match="needs task 1 finished"):
        main([*argv, "--task=2"])
    assert main([*argv, "--task=1"]) == 0
    assert (out / "task1" / "DONE").is_file() and not (out / "task2").exists()
    assert main(argv) == 0
    for name in ("report.md", "report.csv", "matrix_intent_acc.csv", "acc_matrix.png", "run_info.json",
                 "hparams_resolved.yaml", "memory_after_task1.json", "task2/predictions.jsonl"):  # fmt: skip
        assert (out / name).is_file(), name
    step2 = json.loads((out / "results" / "step2.json").read_text())
    assert [p["task"] for p in step2["per_task"]] == [1, 2]
    assert step2["seen"]["n"] == 4
    preds = (out / "task2" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 4 and {"file", "scenario", "action", "entities"} <= set(json.loads(preds[0]))
    # seq-KD pseudo-labels of the 4 memory items (2 per scenario of task 1) were cached once
    import torch

    cache = list((out / "task2" / "targets").glob("targets_*.pt"))
    assert len(cache) == 1 and len(torch.load(cache[0], weights_only=False)["hyps"]) == 4
    # a rerun is a no-op that leaves the results identical (no duplicated lines)
    before = (out / "report.csv").read_text()
    assert main(argv) == 0
    assert (out / "report.csv").read_text() == before
    assert len((out / "task2" / "predictions.jsonl").read_text().splitlines()) == 4
    # another setting in the same folder is refused
    from slukd.utils.run import IncompatibleRunError

    with pytest.raises(IncompatibleRunError):
        main([*argv, "--lr=0.5"])


@pytest.mark.slow
def test_finetune_forgets_and_rehearsal_remembers(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 12, "devel": 3, "test": 3})
    order = _order(tmp_path)
    acc = {}
    for row in ("finetune", "rehearsal_random"):
        assert main(_tone_argv(corpus, tmp_path / row, order, row, 25)) == 0
        steps = [json.loads((tmp_path / row / "results" / f"step{k}.json").read_text()) for k in (1, 2)]
        acc[row] = (steps[0]["per_task"][0]["intent_acc"], steps[1]["per_task"][0]["intent_acc"])
    assert acc["finetune"][0] >= 0.8 and acc["rehearsal_random"][0] >= 0.8  # task 1 really learned
    assert acc["finetune"][1] <= 0.2  # fine-tuning forgets task 1
    assert acc["rehearsal_random"][1] >= 0.8  # rehearsal keeps it


@pytest.mark.slow
def test_kill_during_task2_then_rerun_equals_uninterrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    corpus = make_corpus(tmp_path / "c", {"train": 12, "devel": 3, "test": 3})
    order = _order(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def cmd(out):
        return [sys.executable, str(REPO / "recipes" / "slurp_incremental.py"),
                *_tone_argv(corpus, out, order, "seq_kd", 6)]  # fmt: skip

    subprocess.run(cmd(tmp_path / "a"), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "b"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path / "b" / "task2" / "save").glob("CKPT*")) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd(tmp_path / "b"), env=env, check=True, capture_output=True)
    volatile = VOLATILE  # times and memory (targets_s too: a time)
    for k in (1, 2):
        a, b = (json.loads((tmp_path / r / "results" / f"step{k}.json").read_text()) for r in ("a", "b"))
        assert {x: v for x, v in a.items() if x not in volatile} == {x: v for x, v in b.items() if x not in volatile}
    pa, pb = ((tmp_path / r / "task2" / "predictions.jsonl").read_text() for r in ("a", "b"))
    assert pa == pb


def test_debug_runs_never_touch_the_real_folder_and_run_options_reach_every_phase(tmp_path, tiny_corpus, capfd):
    import torch

    out = tmp_path / "run"
    argv = [str(HP / "seq_kd.yaml"), f"--data_folder={tiny_corpus}", f"--output_folder={out}",
            f"--order={_order(tmp_path)}", *TINY]  # fmt: skip
    argv = [a for a in argv if not a.startswith("--eval_precision")]
    # SpeechBrain's debug mode (a few batches and epochs), with progress bars: they show
    assert main([a for a in argv if a != "--noprogressbar"] + ["--debug"]) == 0
    assert "%|" in capfd.readouterr().err
    debug = tmp_path / "run-debug"
    assert (debug / "task2" / "DONE").is_file() and not out.exists()
    assert json.loads((debug / "run_info.json").read_text())["identity"]["shortened"] is True
    # a real run in the real folder trains from scratch (nothing of the debug run is taken for final)
    assert main([*argv, "--eval_precision=bf16"]) == 0
    assert "%|" not in capfd.readouterr().err  # --noprogressbar: no bar in any phase (training, decoding, targets)
    info = json.loads((out / "run_info.json").read_text())["identity"]
    assert info["shortened"] is False and info["settings"]["eval_precision"] == "bf16"
    assert "eval_precision: bf16" in (out / "hparams_resolved.yaml").read_text()
    # the run option reached the teacher targets (pseudo-labelling) too
    cache = next((out / "task2" / "targets").glob("targets_*.pt"))
    assert torch.load(cache, weights_only=False)["config"]["precision"] == "bf16"
    assert json.loads((out / "results" / "step2.json").read_text())["valid_scope"] == "seen"
