"""Every row file of both recipes loads (on its base and on the GPU base), names itself, and both recipes use one
name per concept; every public function and class of the package has a docstring."""

from __future__ import annotations

import ast

import pytest

from slukd.config import load_hparams, load_tree
from slukd.distill import KDTerm
from tests.conftest import REPO

RECIPES = {"slurp_incremental": "slurp_incremental.py", "captioning_kd": "captioning_kd.py"}
#: concepts both recipes have, under one name
SHARED = ["row", "seed", "output_folder", "corpus", "data_folder", "corpus_seed", "sample_rate",
          "max_audio_seconds", "skip_bad", "audio_check", "number_of_epochs", "batch_size", "eval_batch_size", "lr",
          "warmup_steps", "weight_decay", "label_smoothing", "max_grad_norm", "precision", "eval_precision",
          "noprogressbar", "num_workers", "test_beam_size", "max_decode_len", "enc_kd_weight", "tok_kd_weight",
          "seq_kd_weight", "tok_kd_temperature", "kd_terms", "extra_kd_terms", "opt_class", "lr_schedule",
          "epoch_counter", "train_logger", "model"]  # fmt: skip


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_row_loads_on_both_bases_and_names_itself(recipe):
    folder = REPO / "hparams" / recipe
    assert (REPO / "recipes" / RECIPES[recipe]).is_file()
    rows = sorted(p for p in folder.glob("*.yaml") if not p.stem.startswith("base"))
    assert rows and {p.name for p in folder.glob("base*.yaml")} == {
        "base.yaml",
        "base_gpu.yaml",
        "base_paper.yaml",
        "base_tiny.yaml",
    }
    for path in rows:
        for base in ("base.yaml", "base_gpu.yaml", "base_paper.yaml", "base_tiny.yaml"):
            hp, text = load_hparams(path, f"base: {base}")
            assert hp["row"] == path.stem, path
            terms = hp["kd_terms"] + hp["extra_kd_terms"]
            assert all(isinstance(t, KDTerm) for t in terms) and len({t.name for t in terms}) == len(terms)
            assert callable(hp["model"]) and "!ref" not in text
        assert load_tree(path)["base"] == "base.yaml", f"{path}: a row builds on base.yaml"


def test_one_name_per_concept_across_recipes():
    keys = {r: set(load_tree(REPO / "hparams" / r / "base.yaml")) for r in RECIPES}
    for key in SHARED:
        for recipe, have in keys.items():
            assert key in have, f"{recipe}/base.yaml lacks {key!r}"


def test_gpu_bases_state_only_what_differs():
    for recipe in RECIPES:
        gpu = load_tree(REPO / "hparams" / recipe / "base_gpu.yaml")
        base = load_tree(REPO / "hparams" / recipe / "base.yaml")
        assert gpu["base"] == "base.yaml" and len(gpu) < len(base) / 2


def test_public_functions_and_classes_have_docstrings():
    missing = []
    for path in sorted((REPO / "slukd").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not ast.get_docstring(tree):
            missing.append(f"{path.relative_to(REPO)}: module")
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not missing, missing


def test_caption_speed_demo_preset_is_the_demo_pair():
    """benchmarks/caption_speed.py --preset demo times the models that hparams/captioning_kd/base.yaml trains."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("caption_speed", REPO / "benchmarks" / "caption_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = load_tree(REPO / "hparams" / "captioning_kd" / "base.yaml")
    preset = mod.PRESETS["demo"]
    for name in ("teacher", "student"):
        want = {k: v for k, v in base[f"{name}_model"].items() if k != "dropout"}
        have = {k: v for k, v in preset[name].items() if k != "dropout"}
        assert have == want, f"{name}: preset {have} vs base.yaml {want}"


#: continual-method rows: (plugin class of extra_continual_methods or None, KD terms on, kd_scope)
METHOD_ROWS = {
    "ewc": ("EWC", set(), "memory"),
    "mas": ("MAS", set(), "memory"),
    "agem": ("AGEM", set(), "memory"),
    "derpp": ("DERpp", set(), "memory"),
    "lwf": (None, {"tok"}, "all"),
}


def test_slu_rows_mean_what_their_names_say():
    """The KD rows sit on the paper's base (1% iCaRL herding memory); *_random rows on random memory; each KD row
    turns on exactly the terms its name lists; finetune and joint keep nothing; a continual-method row has no
    rehearsal memory, exactly its own method (with a 1% memory where the method keeps one) and the KD it names."""
    terms = {"audio": "enc_kd_weight", "tok": "tok_kd_weight", "seq": "seq_kd_weight"}
    for path in sorted((REPO / "hparams" / "slurp_incremental").glob("*.yaml")):
        if path.stem.startswith("base"):
            continue
        hp, _ = load_hparams(path)
        name = path.stem
        if name in ("finetune", "joint"):
            assert hp["memory"] == "none" and hp["extra_continual_methods"] == [], name
            continue
        if name in METHOD_ROWS:
            cls, kd_on, scope = METHOD_ROWS[name]
            assert hp["memory"] == "none" and hp["kd_scope"] == scope, name
            assert [type(p).__name__ for p in hp["extra_continual_methods"]] == ([cls] if cls else []), name
            for plugin in hp["extra_continual_methods"]:
                if hasattr(plugin, "fraction"):
                    assert (plugin.fraction, plugin.per_class) == (0.01, None), name
            assert {t for t, key in terms.items() if hp[key] > 0} == kd_on, name
            continue
        if name == "contrastive_kd":
            assert hp["memory"] == "herding" and hp["kd_scope"] == "all" and hp["enc_kd_kind"] == "contrastive"
            assert {t for t, key in terms.items() if hp[key] > 0} == {"audio"}
            continue
        want = "random" if name.endswith("_random") or name == "rehearsal_5pct" else "herding"
        assert hp["memory"] == want, name
        assert hp["memory_fraction"] == (0.05 if name == "rehearsal_5pct" else 0.01) and hp["memory_per_class"] is None
        assert hp["memory_rule"] == "fixed_quota", f"{name}: every row keeps the paper's fixed quota per scenario"
        on = {t for t, key in terms.items() if hp[key] > 0}
        expected = set(terms) if name == "all_kd" else {t for t in terms if t in name.split("_")}
        assert on == expected, f"{name}: KD terms on {sorted(on)}"


#: functions allowed over 80 lines, with the reason (anything else over 80 lines fails)
LONG_FUNCTIONS = {
    ("recipes/captioning_kd.py", "main"): "the experiment's wiring, top to bottom, as a SpeechBrain train.py",
    ("slukd/data/synth_scenes.py", "event_phrases"): "a phrase table: five wordings per sound-event kind",
    ("slukd/data/synth_scenes.py", "generate_scenes"): "one pass over the corpus layout of the module docstring",
    ("slukd/data/synth_slu.py", "synthesize_slu_corpus"): "one pass over the corpus layout of the module docstring",
    ("slukd/metrics/caption.py", "caption_metrics"): "one call per metric, each with its skip message",
    ("slukd/inference/export.py", "export_run"): "one file of the exported interface per step",
    ("slukd/inference/export.py", "model_card"): "one line of the model card per fact, read from the run folder",
}


def test_no_function_over_about_80_lines_without_a_reason():
    too_long = []
    for path in sorted([*(REPO / "slukd").rglob("*.py"), *(REPO / "recipes").glob("*.py")]):
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                limit = 110 if (rel, node.name) in LONG_FUNCTIONS else 80
                if n > limit:
                    too_long.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not too_long, "functions over about 80 lines: " + ", ".join(too_long)


#: the SLU authors' configuration (SLURP_CL_example: main_SLURP_example.py, model_SpeechBrain.py, slurp_aug.py), as
#: base_paper.yaml must resolve it for every row (see the YAML's comments for the source of each value)
SLU_PAPER = {
    "corpus": "slurp", "use_synthetic": True, "headset_only": False, "max_duration": 7.0, "max_audio_seconds": None,
    "audio_check": True, "sample_rate": 16000, "vocab_size": 1000, "tokenizer_type": "bpe",
    "memory_per_class": 70, "number_of_epochs": 40, "later_task_epochs": [25, 15], "batch_size": 32, "lr": 5e-5,
    "encoder_lr": None, "warmup_steps": 0, "weight_decay": 0.1, "label_smoothing": 0.0, "ctc_weight": 0.0,
    "dropout": 0.1, "max_grad_norm": float("inf"), "precision": "fp32", "eval_precision": "fp32",
    "test_beam_size": 20, "pseudo_beam_size": 20, "length_penalty": 0.6, "max_decode_len": 130,
    "pretrained_folder": "facebook/wav2vec2-base-960h", "ssl_freeze": "partial", "ssl_freeze_layers": 0,
    "d_model": 768, "nhead": 8, "num_decoder_layers": 6, "d_ffn": 3072, "kd_mode": "alpha",
}  # fmt: skip
SLU_PAPER_MODEL = {"source": "facebook/wav2vec2-base-960h", "freeze": "partial", "freeze_layers": 0, "d_model": 768,
                   "nhead": 8, "num_decoder_layers": 6, "d_ffn": 3072, "dropout": 0.1, "ctc": False}  # fmt: skip


def test_slu_paper_base_is_the_authors_configuration():
    """Every row on base_paper.yaml resolves to the authors' values (the memory rows keep their own size: 1% = 70
    per scenario, 5% as a fraction), the optimiser and the model get them, and every setting of the file names its
    source in a comment."""
    import functools

    from slukd.models.pretrained import build_ssl_seq2seq
    from slukd.train import WarmupConstant

    folder = REPO / "hparams" / "slurp_incremental"
    for path in sorted(folder.glob("*.yaml")):
        if path.stem.startswith("base"):
            continue
        hp, _ = load_hparams(path, "base: base_paper.yaml")
        want = {k: v for k, v in SLU_PAPER.items() if k not in load_tree(path)}  # what the row itself sets is its own
        if path.stem == "rehearsal_5pct":
            want["memory_per_class"] = None
            assert hp["memory_fraction"] == 0.05
        elif hp["memory"] != "none":
            assert hp["memory_fraction"] is None, path.stem
        got = {k: hp[k] for k in want}
        assert got == want, f"{path.stem}: " + ", ".join(f"{k}={got[k]!r} (want {v!r})" for k, v in want.items()
                                                         if got[k] != v)  # fmt: skip
        model = hp["model"]
        assert isinstance(model, functools.partial) and model.func is build_ssl_seq2seq
        assert {k: model.keywords[k] for k in SLU_PAPER_MODEL} == SLU_PAPER_MODEL
        opt = hp["opt_class"]
        assert opt.func.__name__ == "AdamW" and tuple(opt.keywords["betas"]) == (0.9, 0.98)
        assert opt.keywords["eps"] == 1e-6 and opt.keywords["weight_decay"] == 0.1 and opt.keywords["lr"] == 5e-5
        sched = hp["lr_schedule"]
        assert isinstance(sched, WarmupConstant) and sched.factor(0) == sched.factor(10**6) == 1.0
    # the epochs of each task: 40, 25, then 15 (main_SLURP_example.py: epochs = [40, 25, 15, 15, 15, 15])

    from slukd.slu.strategy import task_epochs

    assert [task_epochs(40, [25, 15], t) for t in range(6)] == [40, 25, 15, 15, 15, 15]
    assert [task_epochs(10, None, t) for t in range(3)] == [10, 10, 10]
    assert [task_epochs(10, 4, t) for t in range(3)] == [10, 4, 4]
    with pytest.raises(ValueError, match="later_task_epochs"):
        task_epochs(10, [0], 1)
    _assert_every_setting_names_its_source(folder / "base_paper.yaml")


def _assert_every_setting_names_its_source(path):
    """Each top-level setting line of ``path`` (except base: and nested lines) carries a [source] tag, on its line or
    in the comment block right above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not line or line[0] in " #" or line.startswith("base:"):
            continue
        above = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            above.append(lines[j])
            j -= 1
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        text = line + " " + " ".join(above) + (nxt if nxt.startswith(" " * 30 + "#") else "")
        if not any(tag in text for tag in ("[main]", "[model]", "[data]", "[paper]", "[ours]", "[code]")):
            missing.append(line.split(":")[0])
    assert not missing, f"{path.name}: settings without a source: {missing}"


def test_captioning_paper_base_is_the_papers_pair():
    """Every captioning row on base_paper.yaml trains the paper's pair: the HTSAT + BART-base teacher, the
    EfficientNet-B2 student with a 2-layer d256 decoder on the paper's front end, captions capped at 20 words, seq-KD on
    the teacher's beam-3 captions; the KD rows sum the losses with unit weights (L = L_sup + L_seq + L_enc)."""
    from slukd.models.paper_caption import PAPER_STUDENT_SPEC, paper_student, paper_teacher

    folder = REPO / "hparams" / "captioning_kd"
    assert PAPER_STUDENT_SPEC["d_model"] == 256 and PAPER_STUDENT_SPEC["nhead"] == 4
    assert PAPER_STUDENT_SPEC["num_decoder_layers"] == 2 and PAPER_STUDENT_SPEC["d_ffn"] == 1024
    assert PAPER_STUDENT_SPEC["cnn"]["width"] == 1.1 and PAPER_STUDENT_SPEC["cnn"]["depth"] == 1.2  # B2 scaling
    for path in sorted(folder.glob("*.yaml")):
        if path.stem.startswith("base"):
            continue
        hp, _ = load_hparams(path, "base: base_paper.yaml")
        assert hp["teacher_model"].func is paper_teacher and hp["student_model"].func is paper_student
        assert hp["student_model"].keywords["spec"] is None  # None: PAPER_STUDENT_SPEC
        assert hp["max_caption_words"] == 20 and hp["test_beam_size"] == 3 and hp["sample_rate"] == 16000
        for key in ("seq_kd_weight", "enc_kd_weight"):
            assert hp[key] in (0.0, 1.0), f"{path.stem}: {key} {hp[key]}"
    _assert_every_setting_names_its_source(folder / "base_paper.yaml")


def test_no_row_or_base_drops_a_later_mark():
    """A setting marked ``{later}`` in base.yaml acts only from task 2 on; a row or base file that sets it again with
    its own comment must keep the mark, or rows differing in it stop sharing task 1 (each retrains it, same result).
    Seen: rehearsal_5pct and base_paper.yaml once dropped it."""
    from slukd.config import later_task_keys

    folder = REPO / "hparams" / "slurp_incremental"
    marked = later_task_keys(folder / "base.yaml")
    assert {"memory_fraction", "memory_per_class", "later_task_epochs"} <= marked
    dropped = {p.name: sorted(marked - later_task_keys(p)) for p in sorted(folder.glob("*.yaml"))}
    assert not {k: v for k, v in dropped.items() if v}, dropped
