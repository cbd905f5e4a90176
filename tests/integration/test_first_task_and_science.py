"""The shared first task (reuse gives the same results, two runs at once, a killed holder) and the SLU science fixes
at recipe level: checkpoint selection on every seen scenario, memory sizes never silently overridden, test-only
labels kept out of the tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from slukd.checks import SettingsError
from slukd.data.tokenizer import Tokenizer
from tests.conftest import REPO
from tests.helpers_slu import RECIPE, comparable_results, main, make_corpus, tiny_argv, write_order


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ft"), {"train": 3, "devel": 1, "test": 1})


def _strip_first_task(res: dict) -> dict:
    out = dict(res)
    for k, v in res.items():
        if isinstance(v, dict) and "first_task" in v:
            out[k] = {kk: vv for kk, vv in v.items() if kk != "first_task"}
    return out


def test_a_run_that_reuses_task_1_equals_one_that_trained_it(corpus, tmp_path):
    order, cache = write_order(tmp_path), tmp_path / "cache"
    assert main(tiny_argv(corpus, tmp_path / "producer", order, "finetune", f"--first_task_cache={cache}")) == 0
    assert main(tiny_argv(corpus, tmp_path / "reuser", order, "seq_kd", f"--first_task_cache={cache}")) == 0
    assert main(tiny_argv(corpus, tmp_path / "alone", order, "seq_kd", "--first_task_cache=null")) == 0
    step1 = json.loads((tmp_path / "reuser" / "results" / "step1.json").read_text())
    assert step1["first_task"]["reused"] is True and step1["first_task"]["trained_by"].endswith("producer")
    assert _strip_first_task(comparable_results(tmp_path / "reuser")) == comparable_results(tmp_path / "alone")
    # another setting that can change task 1 (the learning rate) gets its own entry
    assert main(tiny_argv(corpus, tmp_path / "other", order, "seq_kd", f"--first_task_cache={cache}",
                          "--lr=0.002")) == 0  # fmt: skip
    assert json.loads((tmp_path / "other" / "results" / "step1.json").read_text())["first_task"]["reused"] is False
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def _cmd(corpus, out, order, row, cache, *extra):
    return [sys.executable, str(RECIPE), *tiny_argv(corpus, out, order, row, f"--first_task_cache={cache}",
                                                     "--number_of_epochs=4", *extra)]  # fmt: skip


def test_two_runs_wanting_task_1_at_once_train_it_once(corpus, tmp_path):
    order, cache = write_order(tmp_path), tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "SLUKD_DIE_AT"}
    env["OMP_NUM_THREADS"] = "1"
    procs = [subprocess.Popen(_cmd(corpus, tmp_path / row, order, row, cache), env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for row in ("finetune", "seq_kd")]  # fmt: skip
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    reused = sorted(json.loads((tmp_path / r / "results" / "step1.json").read_text())["first_task"]["reused"]
                    for r in ("finetune", "seq_kd"))  # fmt: skip
    assert reused == [False, True]


def test_a_killed_holder_releases_task_1(corpus, tmp_path):
    order, cache = write_order(tmp_path), tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "SLUKD_DIE_AT"}
    env["OMP_NUM_THREADS"] = "1"
    killed = subprocess.run(_cmd(corpus, tmp_path / "a", order, "finetune", cache), env={**env, "SLUKD_DIE_AT":
                            "train:1:2"}, cwd=REPO, capture_output=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert not [p for p in cache.iterdir() if p.is_dir()]  # nothing published
    done = subprocess.run(_cmd(corpus, tmp_path / "b", order, "seq_kd", cache), env=env, cwd=REPO,
                          capture_output=True, timeout=600)  # fmt: skip
    assert done.returncode == 0  # the lock of the killed run did not block it: it trained task 1 itself
    assert json.loads((tmp_path / "b" / "results" / "step1.json").read_text())["first_task"]["reused"] is False
    again = subprocess.run(_cmd(corpus, tmp_path / "a", order, "finetune", cache), env=env, cwd=REPO,
                           capture_output=True, timeout=600)  # fmt: skip
    assert again.returncode == 0  # the killed run resumes and takes the published task 1
    assert json.loads((tmp_path / "a" / "results" / "step1.json").read_text())["first_task"]["reused"] is True


def test_checkpoint_selection_uses_every_seen_scenario(corpus, tmp_path):
    order = write_order(tmp_path)
    for scope, n_valid in (("seen", 4), ("current", 2)):  # 2 tasks x 2 scenarios x 1 devel item
        out = tmp_path / scope
        assert main(tiny_argv(corpus, out, order, "seq_kd", f"--valid_scope={scope}")) == 0
        step2 = json.loads((out / "results" / "step2.json").read_text())
        assert step2["valid_scope"] == scope and step2["n_valid"] == n_valid


def test_a_memory_size_is_never_silently_overridden(corpus, tmp_path):
    argv = [a for a in tiny_argv(corpus, tmp_path / "r", write_order(tmp_path), "rehearsal_5pct")
            if not a.startswith("--memory_fraction")]  # fmt: skip
    with pytest.raises(SettingsError, match="memory_per_class .*memory_fraction"):
        main(argv)  # the row's 5% and the tiny settings' 2 per class: refused before any work, not one winning
    assert not (tmp_path / "r" / "task1").exists()


def test_test_only_labels_never_shape_the_tokenizer(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    test = corpus / "dataset" / "slurp" / "test.jsonl"
    lines = [json.loads(x) for x in test.read_text().splitlines()]
    lines[0]["action"] = "remove"  # email_remove: an intent that only the test set has
    lines[0]["entities"] = [{"type": "test_only_type", "span": [0]}]
    test.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "run"
    assert main(tiny_argv(corpus, out, write_order(tmp_path), "finetune")) == 0
    tok = Tokenizer.load(out / "tokenizer")
    pieces = {tok.id_to_piece(i).lstrip("\u2581") for i in range(tok.vocab_size)}
    assert "email_sendemail" in pieces and "email_remove" not in pieces and "test_only_type" not in pieces
    data = json.loads((out / "results" / "step2.json").read_text())["data"]
    assert data["test_intents_without_token"] == {"email_remove": 1}
    assert data["test_entity_types_without_token"] == {"test_only_type": 1}
