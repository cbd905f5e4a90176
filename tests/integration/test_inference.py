"""Inference with finished runs: from_run (SLU and captioning), the understand/caption commands, and the export
for SpeechBrain's foreign_class. One tiny run per recipe (module fixtures), trained in-process on generated data."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from slukd.data.audio import AudioError
from slukd.inference import (
    EXPORT_CLASSES,
    Captioner,
    InferenceError,
    SLUModel,
    export_run,
    finished_tasks,
    from_run,
    load_export,
)
from tests.helpers_slu import REPO, make_corpus, tone_argv, write_order

SLU_KEYS = {"file", "path", "intent", "scenario", "action", "entities", "transcript", "text"}


def _run_recipe(recipe: str, argv: list[str]) -> None:
    """``python recipes/<recipe> ARGV`` in this process (the recipe exits through sys.exit)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [str(REPO / "recipes" / recipe), *argv])
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(REPO / "recipes" / recipe), run_name="__main__")
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def slu_run(tmp_path_factory) -> tuple[Path, Path]:
    """(finished two-task SLU run, corpus): 4 tone scenarios, tasks (email, qa) then (alarm, weather)."""
    tmp = tmp_path_factory.mktemp("slu_inf")
    corpus = make_corpus(tmp / "corpus", {"train": 3, "devel": 1, "test": 1})
    argv = tone_argv(corpus, tmp / "run", write_order(tmp), "seq_kd", 3)
    if not any(a.startswith("--first_task_cache") for a in argv):
        argv.append("--first_task_cache=null")
    _run_recipe("slurp_incremental.py", argv)
    return tmp / "run", corpus


@pytest.fixture(scope="module")
def cap_run(tmp_path_factory) -> Path:
    """A finished tiny captioning run (teacher row, 1 epoch, tiny scenes tier)."""
    tmp = tmp_path_factory.mktemp("cap_inf")
    argv = [
        str(REPO / "hparams/captioning_kd/teacher.yaml"),
        f"--base={REPO / 'hparams/captioning_kd/base_tiny.yaml'}",
        "--number_of_epochs=1",
        f"--data_folder={tmp / 'data'}",
        f"--output_folder={tmp / 'run'}",
        "--synth_jobs=1",
    ]
    _run_recipe("captioning_kd.py", argv)
    return tmp / "run"


def _test_files(corpus: Path) -> list[str]:
    names = [r["file"] for line in (corpus / "dataset/slurp/test.jsonl").read_text().splitlines()
             for r in json.loads(line)["recordings"]]  # fmt: skip
    return [str(corpus / "slurp_real" / n) for n in names]


def _variants(src: str, out: Path) -> dict[str, str]:
    """Copies of a 16 kHz mono file: shorter (other length in a batch), stereo, 8 kHz and 44.1 kHz."""
    import torchaudio.functional as AF

    wav, sr = sf.read(src, dtype="float32")
    assert sr == 16000 and wav.ndim == 1
    out.mkdir(exist_ok=True)
    paths = {k: str(out / f"{k}.wav") for k in ("short", "stereo", "sr8k", "sr44k")}
    sf.write(paths["short"], wav[: len(wav) * 3 // 5], sr)
    sf.write(paths["stereo"], np.stack([wav, wav], axis=1), sr)
    for key, rate in (("sr8k", 8000), ("sr44k", 44100)):
        sf.write(paths[key], AF.resample(torch.from_numpy(wav), sr, rate).numpy(), rate, subtype="FLOAT")
    return paths


def _state_equal(model: torch.nn.Module, path: Path) -> bool:
    ref = torch.load(path, map_location="cpu")
    return all(torch.equal(v.cpu(), ref[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------------- SLU
def test_slu_from_run_batched_equals_single_and_recipe(slu_run, tmp_path):
    run, corpus = slu_run
    slu = from_run(run, batch_size=3)
    assert isinstance(slu, SLUModel) and slu.task == 2 and finished_tasks(run) == [1, 2]
    assert slu.beam_size == 2 and slu.precision == "fp32" and slu.sample_rate == 16000
    assert slu.seen_scenarios == ["email", "qa", "alarm", "weather"]
    files = _test_files(corpus)
    var = _variants(files[0], tmp_path / "var")
    paths = [files[0], var["short"], *files[1:], var["stereo"], var["sr8k"], var["sr44k"]]
    batched = slu.understand_files(paths)  # batches of 3 with unequal lengths (padding)
    single = [slu.understand_file(p) for p in paths]
    assert batched == single
    assert all(set(r) == SLU_KEYS for r in batched)
    assert [r["path"] for r in batched] == paths and batched[0]["file"] == Path(files[0]).name
    for r in batched:
        assert r["intent"] == (f"{r['scenario']}_{r['action']}" if r["action"] else r["scenario"])
    # stereo of identical channels down-mixes to the mono file: the same prediction
    strip = lambda r: {k: v for k, v in r.items() if k not in ("file", "path")}  # noqa: E731
    assert strip(batched[-3]) == strip(batched[0])
    # the recipe's own test predictions (task 2 model, beam 2) are reproduced
    recipe = {p["file"]: p for p in map(json.loads, (run / "task2/predictions.jsonl").read_text().splitlines())}
    for r in batched[:1] + batched[2:-3]:
        ref = recipe[r["file"]]
        assert (r["scenario"], r["action"], r["entities"], r["transcript"]) == (
            ref["scenario"], ref["action"], ref["entities"], ref["transcript"]
        )  # fmt: skip
    # another beam size is a different decoding setting, still batch-invariant
    greedy = from_run(run, beam_size=1, batch_size=8)
    assert greedy.beam_size == 1
    assert greedy.understand_files(paths) == [greedy.understand_file(p) for p in paths]


def test_slu_bad_files_name_the_file(slu_run, tmp_path):
    run, corpus = slu_run
    slu = from_run(run)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(AudioError, match="broken.wav"):
        slu.understand_files([_test_files(corpus)[0], str(bad)])
    with pytest.raises(AudioError, match="nothere.wav"):
        slu.understand_file(tmp_path / "nothere.wav")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.flac.*empty_file"):
        slu.understand_file(empty)


def test_slu_task_selection_and_unfinished_task(slu_run, tmp_path):
    run, corpus = slu_run
    first, last = from_run(run, task=1), from_run(run)
    assert first.task == 1 and last.task == 2
    assert _state_equal(first.model, run / "task1/best_model.ckpt")
    assert _state_equal(last.model, run / "task2/best_model.ckpt")
    assert not _state_equal(first.model, run / "task2/best_model.ckpt")
    assert first.seen_scenarios == ["email", "qa"]
    with pytest.raises(InferenceError, match="task must be 1..2"):
        from_run(run, task=3)
    # a run whose second task has not finished: refused by name, the default falls back to task 1
    part = tmp_path / "partial"
    shutil.copytree(run, part, ignore=shutil.ignore_patterns("save", "targets"))
    (part / "task2" / "DONE").unlink()
    assert finished_tasks(part) == [1] and from_run(part).task == 1
    with pytest.raises(InferenceError, match=r"partial/task2: task 2 is not finished \(DONE is missing\)"):
        from_run(part, task=2)
    with pytest.raises(InferenceError, match="task 2 is not finished"):
        export_run(part, tmp_path / "exp", task=2)
    (part / "task1" / "DONE").unlink()
    with pytest.raises(InferenceError, match="no finished task"):
        from_run(part)


def test_understand_cli_writes_jsonl(slu_run, tmp_path, capsys):
    from slukd.cli import main

    run, corpus = slu_run
    files = _test_files(corpus)[:3]
    out = tmp_path / "preds.jsonl"
    assert main(["understand", str(run), *files, "--task", "1", "--out", str(out), "--batch_size", "2", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert printed == written == from_run(run, task=1).understand_files(files)
    assert {"file", "scenario", "action", "entities", "intent", "transcript"} <= set(written[0])
    # the default (last finished task) and an explicit beam size
    assert main(["understand", str(run), files[0], "--beam_size", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_run(run, beam_size=1).understand_file(files[0])
    # without --json: one readable line per file (file, intent, entities, transcript)
    assert main(["understand", str(run), files[0], "--beam_size", "1"]) == 0
    r = from_run(run, beam_size=1).understand_file(files[0])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{Path(files[0]).name}  {r['intent']}  [") and line.endswith(f'"{r["transcript"]}"')
    # the written file is valid SLURP prediction input for the scorer
    from slukd.metrics.slurp_scorer import load_predictions

    assert [p["key"] for p in load_predictions(out)] == [Path(f).name for f in files]
    # one-line errors: a bad file, an unfinished task, the wrong command for the run, nothing to do
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00" * 10)
    capsys.readouterr()
    # an unusable file in a batch: reported in one line, the good ones still decoded and written; exit status 2
    assert (
        main(["understand", str(run), files[0], str(bad), files[1], "--json", "--out", str(tmp_path / "x.jsonl")]) == 2
    )
    err = capsys.readouterr()
    errors = [ln for ln in err.err.strip().splitlines() if " INFO " not in ln]  # log lines aside
    assert len(errors) == 1 and "skipped bad.wav" in errors[0]
    good = from_run(run).understand_files([files[0], files[1]])
    assert [json.loads(line) for line in err.out.splitlines()] == good
    assert [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()] == good
    assert main(["understand", str(run), files[0], "--device", "nosuchdevice"]) == 2
    assert "device 'nosuchdevice'" in capsys.readouterr().err
    assert main(["understand", str(run), files[0], "--batch_size", "0"]) == 2
    assert "batch_size must be an integer >= 1" in capsys.readouterr().err
    assert main(["understand", str(run), files[0], "--task", "5"]) == 2
    assert "task must be 1..2" in capsys.readouterr().err
    assert main(["caption", str(run), files[0]]) == 2
    assert "use slukd understand" in capsys.readouterr().err
    assert main(["understand", str(run)]) == 2
    assert "--export" in capsys.readouterr().err
    assert main(["understand", str(tmp_path / "norun"), files[0]]) == 2
    assert "norun: no such run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["understand", "--help"])
    assert exc.value.code == 0 and "--task" in capsys.readouterr().out


def test_slu_export_loads_through_foreign_class(slu_run, tmp_path, capsys):
    from speechbrain.inference.interfaces import foreign_class

    from slukd.cli import main

    run, corpus = slu_run
    exp = tmp_path / "exported"
    assert main(["understand", str(run), "--export", str(exp), "--task", "1"]) == 0
    assert sorted(p.name for p in exp.iterdir()) == [
        "README.md", "custom_interface.py", "hyperparams.yaml", "model.ckpt", "model.yaml", "tokenizer.ckpt"
    ]  # fmt: skip
    card = (exp / "README.md").read_text()
    assert "task 1 of 2" in card and "email, qa" in card and "intent accuracy" in card and "foreign_class" in card
    assert (exp / "model.ckpt").read_bytes() == (run / "task1/best_model.ckpt").read_bytes()
    iface = foreign_class(source=str(exp), pymodule_file="custom_interface.py", classname="SLUInterface",
                          savedir=str(tmp_path / "collected"))  # fmt: skip
    assert type(iface).__name__ == EXPORT_CLASSES["slu"]
    files = _test_files(corpus)
    var = _variants(files[0], tmp_path / "var")
    paths = [files[0], var["short"], var["sr44k"], files[1]]
    expected = from_run(run, task=1).understand_files(paths)
    assert [iface.decode_file(p) for p in paths] == expected
    assert iface.decode_files(paths, batch_size=3) == expected
    # decode_batch on a SpeechBrain-style padded batch: (texts, tokens) as EndToEndSLU returns them
    from speechbrain.dataio.batch import PaddedBatch

    batch = PaddedBatch([{"sig": iface.load_audio(p)} for p in paths])
    texts, tokens = iface.decode_batch(*batch.sig)
    assert texts == [r["text"] for r in expected] and len(tokens) == 4
    # a second export over the first is allowed; an unrelated non-empty folder is not
    export_run(run, exp)
    assert load_export(exp).decode_file(files[0]) == from_run(run).understand_file(files[0])
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InferenceError, match="not empty"):
        export_run(run, other)


def test_slu_arrays_tensors_and_dicts_equal_files(slu_run, tmp_path):
    """Waveforms as numpy arrays or tensors (mono, [C, S], [S, C], int16 PCM, another rate) decode as their files."""
    import torchaudio.functional as AF

    run, corpus = slu_run
    slu = from_run(run, batch_size=2)
    files = _test_files(corpus)[:3]
    want = slu.understand_files(files)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("file", "path")}  # noqa: E731
    wavs = [sf.read(f, dtype="float32")[0] for f in files]
    got = slu.understand([wavs[0], torch.from_numpy(wavs[1]), np.stack([wavs[2], wavs[2]])])
    assert [strip(r) for r in got] == [strip(r) for r in want] and got[0]["file"] == "input0"
    assert strip(slu.understand(torch.from_numpy(np.stack([wavs[0]] * 2, axis=1)))) == strip(want[0])
    pcm = (np.clip(wavs[0], -1, 1) * 32767).astype(np.int16)
    assert strip(slu.understand(pcm))["intent"] == want[0]["intent"]
    slow = AF.resample(torch.from_numpy(wavs[1]), 16000, 8000)
    assert strip(slu.understand({"array": slow, "sampling_rate": 8000})) == strip(
        slu.understand(AF.resample(slow, 8000, 16000))
    )
    # one unusable input among good ones: skipped with its reason, the others decoded
    mixed = slu.understand([files[0], np.zeros((0,)), str(tmp_path / "missing.wav"), wavs[1]], on_error="skip")
    assert strip(mixed[0]) == strip(want[0]) and strip(mixed[3]) == strip(want[1])
    assert "shape" in mixed[1]["error"] and "missing.wav" in mixed[2]["error"]
    with pytest.raises(InferenceError, match="sampling_rate"):
        slu.understand({"array": wavs[0]})


def test_export_command_and_interface_without_slukd(slu_run, tmp_path, capsys):
    from slukd.cli import main

    run, _ = slu_run
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert "model card README.md" in capsys.readouterr().out
    assert (tmp_path / "exp" / "README.md").is_file() and (tmp_path / "exp" / "hyperparams.yaml").is_file()
    assert main(["export", str(tmp_path / "norun"), "--out", str(tmp_path / "e2")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # the exported interface where slukd is not installed: one line saying so
    code = (
        "import sys, importlib.util; sys.modules['slukd'] = None\n"
        f"spec = importlib.util.spec_from_file_location('ci', {str(tmp_path / 'exp' / 'custom_interface.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "try:\n    spec.loader.exec_module(mod)\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.stdout.startswith("ERR this exported model needs the slukd package"), proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------- captioning
def test_captioner_batched_equals_single_and_recipe(cap_run, tmp_path):
    cap = from_run(cap_run, batch_size=3)
    assert isinstance(cap, Captioner) and cap.beam_size == 3 and cap.precision == "bf16"
    from slukd.data.captions import read_manifest

    test = read_manifest(cap_run / "manifests/test.csv")
    files = [r["wav"] for r in test]
    var = _variants(files[0], tmp_path / "var")
    paths = [files[0], var["short"], *files[1:], var["stereo"], var["sr8k"]]
    batched = cap.caption_files(paths)
    assert batched == [cap.caption_file(p) for p in paths]
    assert all(isinstance(c, str) and c for c in batched)
    assert batched[-2] == batched[0]  # stereo of identical channels = the mono clip
    recipe = {p["ID"]: p["prediction"] for p in map(json.loads, (cap_run / "predictions_test.jsonl").read_text()
                                                    .splitlines())}  # fmt: skip
    assert [recipe[r["ID"]] for r in test] == [batched[0], *batched[2 : 1 + len(test)]]
    with pytest.raises(InferenceError, match="no tasks"):
        from_run(cap_run, task=1)
    with pytest.raises(InferenceError, match="batch_size must be an integer >= 1"):
        from_run(cap_run, batch_size=0)
    bad = tmp_path / "cut.wav"
    sf.write(bad, np.zeros(1600, dtype=np.float32), 16000)
    bad.write_bytes(bad.read_bytes()[:-400])  # the data chunk is shorter than its header says
    with pytest.raises(AudioError, match="cut.wav.*truncated"):
        cap.caption_file(bad)


def test_caption_cli_and_export(cap_run, tmp_path, capsys):
    from speechbrain.inference.interfaces import foreign_class

    from slukd.cli import main
    from slukd.data.captions import read_manifest

    files = [r["wav"] for r in read_manifest(cap_run / "manifests/test.csv")][:3]
    out, exp = tmp_path / "captions.jsonl", tmp_path / "exported"
    assert main(["caption", str(cap_run), *files, "--out", str(out), "--export", str(exp)]) == 0
    expected = from_run(cap_run).caption_files(files)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{f}\t{c}" for f, c in zip(files, expected)]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"file": f, "caption": c} for f, c in zip(files, expected)
    ]
    assert main(["caption", str(cap_run), *files, "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"file": f, "caption": c} for f, c in zip(files, expected)
    ]
    wav = sf.read(files[0], dtype="float32")[0]
    assert from_run(cap_run).caption(torch.from_numpy(wav)) == expected[0]
    assert main(["understand", str(cap_run), files[0]]) == 2
    assert "use slukd caption" in capsys.readouterr().err
    iface = foreign_class(source=str(exp), pymodule_file="custom_interface.py", classname="CaptioningInterface",
                          savedir=str(tmp_path / "collected"))  # fmt: skip
    assert [iface.decode_file(f) for f in files] == expected
    assert iface.decode_files(files, batch_size=2) == expected
    assert iface.hparams.vocab.itos == from_run(cap_run).vocab.itos
    # an unfinished captioning run (no results.json) is refused
    part = tmp_path / "partial"
    shutil.copytree(cap_run, part, ignore=shutil.ignore_patterns("save"))
    (part / "results.json").unlink()
    with pytest.raises(InferenceError, match="partial: the captioning run is not finished"):
        from_run(part)
    with pytest.raises(InferenceError, match="not finished"):
        export_run(part, tmp_path / "exp2")
