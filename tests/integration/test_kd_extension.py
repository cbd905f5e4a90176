"""Adding a KD method = one class + one YAML line: a term defined outside slukd/ trains in both recipes, its loss
appears in the training logs and its head is checkpointed with the student."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO  # noqa: E402
from tests.helpers_slu import HP, make_corpus, recipe_module, tiny_argv, write_order

YAML_LINE = "extra_kd_terms: [!new:tests.custom_kd.CosineKD {weight: 0.5}]\n"


def _row(tmp_path: Path, name: str, base: Path, extra: str) -> Path:
    row = tmp_path / f"{name}.yaml"
    row.write_text(f"base: {base}\nrow: {name}\n{extra}{YAML_LINE}", encoding="utf-8")
    return row


def test_user_kd_term_trains_in_the_slu_recipe(tmp_path):
    corpus = make_corpus(tmp_path / "c", {"train": 2, "devel": 1, "test": 1})
    row = _row(tmp_path, "cos_kd", HP / "rehearsal_random.yaml", "")
    argv = [str(row), *tiny_argv(corpus, tmp_path / "run", write_order(tmp_path), "seq_kd")[1:]]
    assert recipe_module("slurp_incremental").main(argv) == 0
    log = (tmp_path / "run" / "task2" / "train_log.txt").read_text()
    assert "train kd_cos:" in log and "train alpha:" in log  # applied on the memory items, alpha-weighted
    assert "kd_cos" not in (tmp_path / "run" / "task1" / "train_log.txt").read_text()  # no teacher in task 1
    ckpts = list((tmp_path / "run" / "task2" / "save").glob("CKPT*/kd_cos.ckpt"))
    assert ckpts, "the user head is checkpointed with the student"


def test_user_kd_term_trains_in_the_captioning_recipe(tmp_path):
    hp = REPO / "hparams" / "captioning_kd"
    tiny = REPO / "hparams" / "captioning_kd" / "base_tiny.yaml"
    common = [f"--base={tiny}", f"--data_folder={tmp_path / 'data'}", f"--teacher_folder={tmp_path / 'teacher'}",
              "--number_of_epochs=1", "--noprogressbar"]  # fmt: skip
    cap = recipe_module("captioning_kd")
    assert cap.main([str(hp / "teacher.yaml"), *common, f"--output_folder={tmp_path / 'teacher'}"]) == 0
    row = _row(tmp_path, "cos_student", tiny, "seq_kd_weight: 1.0\n")
    assert cap.main([str(row), *common[1:], f"--output_folder={tmp_path / 'student'}"]) == 0
    log = (tmp_path / "student" / "train_log.txt").read_text()
    assert "train kd_cos:" in log and "train kd_seq:" in log
    assert list((tmp_path / "student" / "save").glob("CKPT*/kd_cos.ckpt"))
