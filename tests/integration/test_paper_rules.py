"""The SLU paper's rules at recipe level: the fixed per-scenario memory quota of a paper row, what every step result
records (memory, optimiser steps, device, code, data), and a re-synthesised corpus never reusing a stale task 1."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.helpers_slu import main, make_corpus, tiny_argv, write_order


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("rules"), {"train": 6, "devel": 1, "test": 1})


def _order3(folder):
    p = folder / "order3.txt"
    p.write_text("email\nqa\nalarm weather\n", encoding="utf-8")
    return p


def _step(run, k):
    return json.loads((run / "results" / f"step{k}.json").read_text(encoding="utf-8"))


def _memory(run, k):
    return json.loads((run / f"memory_after_task{k}.json").read_text(encoding="utf-8"))["classes"]


def test_a_paper_row_keeps_its_fixed_quota_per_scenario(corpus, tmp_path):
    # 24 training items (6 per scenario), 4 scenarios, 25%: quota floor(0.25 * 24 / 4) = 1 per scenario
    order = _order3(tmp_path)
    mem = ["--memory_per_class=null", "--memory_fraction=0.25"]
    run = tmp_path / "fixed"
    assert main(tiny_argv(corpus, run, order, "rehearsal_random", *mem)) == 0
    m1, m2 = (_step(run, k)["continual"]["memory"] for k in (1, 2))  # the memory after tasks 1 and 2
    assert m1["rule"] == "fixed_quota" and m1["quota_per_class"] == 1
    assert m1["per_class"] == {"email": 1}
    assert m2["per_class"] == {"email": 1, "qa": 1}  # task 1's scenario kept its quota
    assert _memory(run, 2)["email"] == _memory(run, 1)["email"]  # the same items, never shrunk nor grown
    # every step result says how it was made and how many optimiser steps it took
    for k in (1, 2, 3):
        s = _step(run, k)
        assert s["optimizer_steps"] > 0 and s["device"]["device"] == "cpu"
        assert len(s["code"]["fingerprint"]) == 16 and "continual/memory.py" in s["code"]["files"]
        assert (
            s["data_digest"] and s["data_digest"] == json.loads((run / "run_info.json").read_text())["identity"]["data"]
        )
    assert "| 2 | fixed_quota | 1 | 2 | email 1, qa 1 |" in (run / "report.md").read_text()
    # today's rule, kept as an option: 6 items shared by the scenarios seen so far (task 1's scenario shrinks)
    shared = tmp_path / "shared"
    argv = tiny_argv(corpus, shared, order, "rehearsal_random", *mem, "--memory_rule=shared_budget")
    assert main([*argv, "--task=1"]) == 0 and main([*argv, "--task=2"]) == 0
    assert {c: len(v) for c, v in _memory(shared, 1).items()} == {"email": 6}
    assert {c: len(v) for c, v in _memory(shared, 2).items()} == {"email": 3, "qa": 3}


def test_a_resynthesised_corpus_never_reuses_a_stale_task_1(corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    order, cache = write_order(tmp_path), tmp_path / "cache"
    args = [f"--first_task_cache={cache}", "--task=1"]
    assert main(tiny_argv(data, tmp_path / "a", order, "finetune", *args)) == 0
    assert main(tiny_argv(data, tmp_path / "b", order, "seq_kd", *args)) == 0  # same data: task 1 reused
    assert _step(tmp_path / "b", 1)["first_task"]["reused"] is True
    # the corpus is made again in the same folder (same names, new files)
    for p in sorted((data / "slurp_real").iterdir())[:2]:
        p.write_bytes(p.read_bytes())
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert main(tiny_argv(data, tmp_path / "c", order, "seq_kd", *args)) == 0
    step = _step(tmp_path / "c", 1)
    assert step["first_task"]["reused"] is False
    assert step["data_digest"] != _step(tmp_path / "a", 1)["data_digest"]
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
