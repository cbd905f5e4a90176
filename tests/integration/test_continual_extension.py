"""Adding a continual-learning method = one class + one YAML line (docs/extending.md): a plugin defined outside
slukd/ trains in the SLU recipe, its loss is in the task-2 training log, its state is saved after task 1 and its
summary is in the step results; task 1 is still shared with the other rows of the seed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers_slu import HP, make_corpus, recipe_module, tiny_argv, write_order

YAML_LINE = "extra_continual_methods: [!new:tests.custom_continual.L2Anchor {weight: 0.01}]\n"


def test_user_continual_method_trains_in_the_slu_recipe(tmp_path: Path):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    row = tmp_path / "l2_anchor.yaml"
    row.write_text(f"base: {HP / 'finetune.yaml'}\nrow: l2_anchor\n{YAML_LINE}", encoding="utf-8")
    order, cache = write_order(tmp_path), tmp_path / "cache"
    recipe = recipe_module("slurp_incremental")
    base = tiny_argv(corpus, tmp_path / "ft", order, "finetune", f"--first_task_cache={cache}")
    assert recipe.main(base) == 0
    argv = [str(row), *tiny_argv(corpus, tmp_path / "run", order, "seq_kd", f"--first_task_cache={cache}")[1:]]
    assert recipe.main(argv) == 0
    run = tmp_path / "run"
    assert "train cl_l2:" in (run / "task2" / "train_log.txt").read_text()
    assert "cl_l2" not in (run / "task1" / "train_log.txt").read_text()  # nothing to anchor to in task 1
    assert (run / "continual" / "l2_after_task1.pt").is_file()
    step1 = json.loads((run / "results" / "step1.json").read_text())
    assert step1["continual"]["l2"]["anchored"] > 0
    assert step1["first_task"]["reused"]  # the plugin cannot change task 1: shared with the finetune row
