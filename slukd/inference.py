"""Apply a finished run to new audio: a Python API, the ``slukd understand`` / ``slukd caption`` commands, and an
export for SpeechBrain's pretrained interfaces.

    from slukd.inference import from_run
    slu = from_run("results/slurp_incremental/seq_kd/seed1")          # the last finished task's model
    slu.understand_file("turn_on_the_lights.wav")
    # {"file": "turn_on_the_lights.wav", "path": ..., "intent": "iot_hue_lighton", "scenario": "iot",
    #  "action": "hue_lighton", "entities": [...], "transcript": "turn on the lights", "text": <decoded target>}
    cap = from_run("results/captioning_kd/demo/seed0/teacher")
    cap.caption_files(["a.wav", "b.flac"])                             # ["rain falls on a roof", ...]

A run folder is recognised by what the recipes write into it:

- SLU (``recipes/slurp_incremental.py``): ``model.yaml`` (builder, ``vocab_size``, ``test_beam_size``,
  ``max_decode_len``, ``eval_precision``, ``sample_rate``, ``tasks``), ``tokenizer/tokenizer.model`` and, per
  finished task k, ``task<k>/best_model.ckpt`` + ``task<k>/DONE``;
- captioning (``recipes/captioning_kd.py``): ``model.yaml``, ``vocab.json``, ``model.ckpt`` and ``results.json``
  (written last: the run is finished).

Decoding is the recipes' test decoding: audio read by :func:`slukd.data.audio.load_audio` at the run's sample rate
(other rates resampled, several channels averaged, cropped to the run's ``max_audio_seconds`` when it had one),
batched as a SpeechBrain ``PaddedBatch`` (zero padding, relative lengths ``len_i / max_j len_j``), encoded and
beam-searched (beam = the run's ``test_beam_size`` unless given) under autocast in the run's ``eval_precision``.
Padding never changes a real position's outputs, so an item decodes to the same text in any batch.

:func:`export_run` writes a folder that ``speechbrain.inference.interfaces.foreign_class`` loads (see
``slukd/export/custom_interface.py``): ``hyperparams.yaml`` (the model, its tokenizer or vocabulary, ``modules``
and a ``pretrainer``), ``custom_interface.py``, ``model.ckpt``, ``tokenizer.ckpt`` or ``vocab.ckpt``.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import os
import pydoc
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "InferenceError",
    "SLUModel",
    "Captioner",
    "from_run",
    "run_kind",
    "finished_tasks",
    "decode_waveforms",
    "slu_result",
    "export_run",
    "load_export",
    "EXPORT_CLASSES",
    "cli_main",
]

#: the interface class of an exported folder, by run kind (defined in ``slukd/export/custom_interface.py``)
EXPORT_CLASSES = {"slu": "SLUInterface", "captioning": "CaptioningInterface"}
EXPORT_MARKER = "# slukd export"

PathLike = str | os.PathLike


class InferenceError(ValueError):
    """A run folder or option that cannot be used for inference; the message names the folder or option."""


# ---------------------------------------------------------------------------------------------------- run folders
def run_kind(run_dir: PathLike) -> str:
    """``"slu"`` or ``"captioning"``: which recipe wrote ``run_dir`` (from the files it holds)."""
    from slukd.utils.model_io import read_model_spec

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    spec = read_model_spec(run)  # FileNotFoundError naming model.yaml when absent
    if "tasks" in spec or (run / "tokenizer" / "tokenizer.model").is_file():
        return "slu"
    if (run / "vocab.json").is_file():
        return "captioning"
    raise InferenceError(
        f"{run}: neither an SLU run (tokenizer/tokenizer.model, tasks in model.yaml) nor a captioning run (vocab.json)"
    )


def finished_tasks(run_dir: PathLike) -> list[int]:
    """The finished tasks (1-based) of an SLU run: ``task<k>/DONE`` and ``task<k>/best_model.ckpt`` present."""
    run = Path(run_dir)
    return sorted(
        int(p.name[4:])
        for p in run.glob("task*")
        if p.name[4:].isdigit() and (p / "DONE").is_file() and (p / "best_model.ckpt").is_file()
    )


def _resolved_setting(run: Path, key: str, default: Any) -> Any:
    """A plain setting of the run's ``hparams_resolved.yaml`` (``default`` when the file or key is absent)."""
    from ruamel.yaml import YAML

    path = run / "hparams_resolved.yaml"
    if not path.is_file():
        return default
    try:
        tree = YAML(typ="rt").load(path.read_text(encoding="utf-8")) or {}
    except Exception as err:  # ruamel raises many error types
        raise InferenceError(f"{path}: unreadable resolved hparams ({str(err).splitlines()[0]})") from None
    value = tree.get(key, default)
    if hasattr(value, "tag") and getattr(value.tag, "value", None):  # a tagged node is not a plain setting
        return default
    return value


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InferenceError(f"device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError(f"device {device!r}: CUDA is not available on this machine")
    return str(device)


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InferenceError(f"{name} must be an integer >= 1, got {value!r}")


# ---------------------------------------------------------------------------------------------------- decoding
@torch.no_grad()
def decode_waveforms(
    model: torch.nn.Module,
    wavs: Sequence[torch.Tensor],
    beam_size: int,
    max_len: int,
    device: str = "cpu",
    precision: str | None = None,
    unpadded: bool = False,
) -> list[list[int]]:
    """Best hypothesis (token ids, no bos/eos) of each mono waveform ``[S_i]``, decoded as one batch: a SpeechBrain
    ``PaddedBatch`` (``sig`` [B, max S_i] zero-padded, relative lengths ``S_i / max S_j``), ``model.encode`` then
    :func:`slukd.train.decode.decode` under autocast in ``precision`` (as ``decode_dataset`` does). With
    ``unpadded`` (captioning) each waveform is encoded at its own length
    (:func:`slukd.train.decode.encode_unpadded`), so its hypothesis does not depend on the others."""
    from speechbrain.dataio.batch import PaddedBatch

    from slukd.train.decode import autocast, decode, encode_unpadded

    if not wavs:
        return []
    batch = PaddedBatch([{"id": str(i), "sig": w} for i, w in enumerate(wavs)]).to(device)
    sig, lens = batch.sig
    with autocast(device, precision):
        enc, enc_lens = encode_unpadded(model, sig, lens) if unpadded else (model.encode(sig, lens), lens)
        hyps = decode(model, enc, enc_lens, beam_size, max_len)
    return [[int(t) for t in h] for h in hyps]


def slu_result(path: PathLike, text: str) -> dict[str, Any]:
    """The SLURP prediction of one recording from its decoded target ``text``: ``file`` (the file name, SLURP's
    key), ``path`` (as given), ``intent``, ``scenario``, ``action``, ``entities`` [{type, filler}], ``transcript``
    and the raw ``text``."""
    from slukd.data.target import parse

    p = parse(text)
    return {
        "file": os.path.basename(str(path)),
        "path": str(path),
        "intent": p.intent,
        "scenario": p.scenario,
        "action": p.action,
        "entities": [{"type": e["type"], "filler": e["filler"]} for e in p.entities],
        "transcript": p.transcript,
        "text": text,
    }


class _RunModel:
    """A trained model of a run folder with its decoding settings (shared by :class:`SLUModel` and
    :class:`Captioner`)."""

    #: encode every file at its own length (captioning: a caption never depends on the files decoded with it)
    unpadded = False

    def __init__(
        self,
        run_dir: Path,
        weights: Path,
        device: str,
        beam_size: int | None,
        batch_size: int,
        sample_rate: int,
    ) -> None:
        from slukd.utils.model_io import load_model, read_model_spec

        _positive("beam_size", beam_size)
        _positive("batch_size", batch_size)
        self.run_dir = Path(run_dir)
        self.weights = Path(weights)
        self.device = _check_device(device)
        spec = read_model_spec(self.run_dir)
        for key in ("vocab_size", "test_beam_size", "max_decode_len", "eval_precision"):
            if key not in spec:
                raise InferenceError(f"{self.run_dir / 'model.yaml'}: field {key!r} is missing")
        self.spec = spec
        self.beam_size = int(beam_size if beam_size is not None else spec["test_beam_size"])
        self.batch_size = int(batch_size)
        self.max_decode_len = int(spec["max_decode_len"])
        self.precision = str(spec["eval_precision"])
        self.sample_rate = int(sample_rate)
        max_seconds = _resolved_setting(self.run_dir, "max_audio_seconds", None)
        self.max_audio_seconds = float(max_seconds) if max_seconds is not None else None
        self.model = load_model(self.run_dir, self.weights, device=self.device)

    def load(self, path: PathLike) -> torch.Tensor:
        """One file as the recipes read it: mono float32 ``[S]`` at the run's rate (AudioError names the file)."""
        from slukd.data.audio import load_audio

        return load_audio(path, self.sample_rate, self.max_audio_seconds, long_policy="crop")[0]

    def decode_paths(self, paths: Sequence[PathLike]) -> list[list[int]]:
        """Token ids of each file, ``batch_size`` files per batch, in the order given."""
        out: list[list[int]] = []
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start : start + self.batch_size]
            wavs = [self.load(p) for p in chunk]
            out += decode_waveforms(self.model, wavs, self.beam_size, self.max_decode_len, self.device, self.precision,
                                    unpadded=self.unpadded)  # fmt: skip
        return out


class SLUModel(_RunModel):
    """The model of one finished task of an SLU run, with its tokenizer: audio -> intent, entities, transcript."""

    def __init__(
        self,
        run_dir: PathLike,
        task: int | None = None,
        device: str = "cpu",
        beam_size: int | None = None,
        batch_size: int = 8,
    ) -> None:
        from slukd.data.tokenizer import Tokenizer
        from slukd.utils.model_io import read_model_spec

        run = Path(run_dir)
        spec = read_model_spec(run)
        self.task = select_task(run, task, spec)
        tdir = run / f"task{self.task}"
        super().__init__(run, tdir / "best_model.ckpt", device, beam_size, batch_size, spec.get("sample_rate", 16000))
        self.tokenizer = Tokenizer.load(run / "tokenizer")
        if self.tokenizer.vocab_size != int(spec["vocab_size"]):
            raise InferenceError(
                f"{self.tokenizer.path}: {self.tokenizer.vocab_size} pieces, but model.yaml says vocab_size "
                f"{spec['vocab_size']}"
            )
        tasks = spec.get("tasks") or []
        #: the scenarios the model was trained on (tasks 1..task): it predicts no others
        self.seen_scenarios = [s for t in tasks[: self.task] for s in t]

    def understand_files(self, paths: Sequence[PathLike]) -> list[dict[str, Any]]:
        """One SLURP prediction dict per file (see :func:`slu_result`), decoded ``batch_size`` files at a time."""
        paths = list(paths)
        return [slu_result(p, self.tokenizer.decode(h)) for p, h in zip(paths, self.decode_paths(paths))]

    def understand_file(self, path: PathLike) -> dict[str, Any]:
        """The SLURP prediction dict of one file."""
        return self.understand_files([path])[0]


class Captioner(_RunModel):
    unpadded = True
    """The model of a finished captioning run, with its word vocabulary: audio -> caption."""

    def __init__(
        self, run_dir: PathLike, device: str = "cpu", beam_size: int | None = None, batch_size: int = 8
    ) -> None:
        from slukd.data.captions import WordVocab

        run = Path(run_dir)
        if not (run / "results.json").is_file():
            raise InferenceError(f"{run}: the captioning run is not finished (no results.json)")
        sr = _resolved_setting(run, "sample_rate", 16000)
        super().__init__(run, run / "model.ckpt", device, beam_size, batch_size, int(sr))
        self.vocab = WordVocab.load(run / "vocab.json")
        if self.vocab.vocab_size != int(self.spec["vocab_size"]):
            raise InferenceError(
                f"{run / 'vocab.json'}: {self.vocab.vocab_size} words, but model.yaml says vocab_size "
                f"{self.spec['vocab_size']}"
            )

    def caption_files(self, paths: Sequence[PathLike]) -> list[str]:
        """One caption per file, decoded ``batch_size`` files at a time."""
        return [self.vocab.decode(h) for h in self.decode_paths(list(paths))]

    def caption_file(self, path: PathLike) -> str:
        """The caption of one file."""
        return self.caption_files([path])[0]


def select_task(run: Path, task: int | None, spec: dict[str, Any] | None = None) -> int:
    """The task (1-based) whose model to use: ``task`` when it is finished, else the last finished one."""
    from slukd.utils.model_io import read_model_spec

    spec = read_model_spec(run) if spec is None else spec
    n_tasks = len(spec.get("tasks") or [])
    done = finished_tasks(run)
    if task is None:
        if not done:
            raise InferenceError(f"{run}: no finished task yet ({run / 'task1' / 'DONE'} is missing)")
        return done[-1]
    if isinstance(task, bool) or not isinstance(task, int) or task < 1 or (n_tasks and task > n_tasks):
        raise InferenceError(f"{run}: task must be 1..{n_tasks or '?'}, got {task!r}")
    if task not in done:
        tdir = run / f"task{task}"
        missing = "DONE" if not (tdir / "DONE").is_file() else "best_model.ckpt"
        have = ", ".join(map(str, done)) or "none"
        raise InferenceError(f"{tdir}: task {task} is not finished ({missing} is missing); finished tasks: {have}")
    return task


def from_run(
    run_dir: PathLike,
    task: int | None = None,
    device: str = "cpu",
    beam_size: int | None = None,
    batch_size: int = 8,
) -> SLUModel | Captioner:
    """The trained model of a finished run, ready for new audio: an :class:`SLUModel` for an SLU run (``task``:
    which finished task's model, default the last finished one) or a :class:`Captioner` for a captioning run.
    ``beam_size`` defaults to the run's ``test_beam_size``; ``batch_size`` files are decoded together."""
    kind = run_kind(run_dir)
    if kind == "slu":
        return SLUModel(run_dir, task=task, device=device, beam_size=beam_size, batch_size=batch_size)
    if task is not None:
        raise InferenceError(f"{run_dir}: a captioning run has no tasks (task={task!r})")
    return Captioner(run_dir, device=device, beam_size=beam_size, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------- export
def _builder_yaml(run: Path, vocab_size: int) -> str:
    """The ``model:`` entry of ``run/model.yaml`` made an instance (``!name:`` -> ``!new:`` for a class,
    ``!apply:`` for a function) with ``vocab_size`` added, as YAML text."""
    from ruamel.yaml import YAML

    from slukd.config import strip_comments

    path = run / "model.yaml"
    y = YAML(typ="rt")
    tree = y.load(path.read_text(encoding="utf-8"))
    node = tree.get("model") if tree else None
    tag = getattr(getattr(node, "tag", None), "value", None) or ""
    if not tag.startswith("!name:"):
        raise InferenceError(f"{path}: field 'model' is not a !name: builder")
    target = tag[len("!name:") :]
    obj = pydoc.locate(target)
    if obj is None:
        raise InferenceError(f"{path}: builder {target} cannot be imported")
    if not isinstance(node, dict):  # a builder without arguments
        text = f"model: !name:{target}\n    vocab_size: {int(vocab_size)}\n"
    else:
        node = strip_comments(node)
        node["vocab_size"] = int(vocab_size)
        buf = io.StringIO()
        y.dump({"model": node}, buf)
        text = buf.getvalue()
    first, rest = text.split("\n", 1)
    if first.strip() != f"model: !name:{target}":
        raise InferenceError(f"{path}: unexpected layout of the model builder ({first!r})")
    kind = "!new:" if inspect.isclass(obj) else "!apply:"
    return f"model: {kind}{target}\n{rest}"


def _check_export_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InferenceError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        hp = out / "hyperparams.yaml"
        if not (hp.is_file() and hp.read_text(encoding="utf-8").startswith(EXPORT_MARKER)):
            raise InferenceError(f"{out}: the folder is not empty and holds no earlier slukd export; choose another")


def export_run(run_dir: PathLike, out_dir: PathLike, task: int | None = None) -> Path:
    """Write a SpeechBrain pretrained-interface folder for a finished run (an SLU run's ``task``, default the last
    finished one) into ``out_dir`` (created; an earlier export there is replaced). Load it with
    :func:`load_export` or ``foreign_class(source=out_dir, pymodule_file="custom_interface.py",
    classname=EXPORT_CLASSES[kind])``. Returns ``out_dir``."""
    from slukd.utils.io import atomic_write_bytes, atomic_write_text
    from slukd.utils.model_io import read_model_spec

    run, out = Path(run_dir), Path(out_dir)
    kind = run_kind(run)
    spec = read_model_spec(run)
    _check_export_dir(out)
    if kind == "slu":
        k = select_task(run, task, spec)
        weights, sample_rate = run / f"task{k}" / "best_model.ckpt", int(spec.get("sample_rate", 16000))
        tok = run / "tokenizer" / "tokenizer.model"
        if not tok.is_file():
            raise FileNotFoundError(f"{tok}: the run's tokenizer is missing")
        extra_files = {"tokenizer.ckpt": tok}
        what = f"task {k} of {len(spec.get('tasks') or [])}"
        text_part = "tokenizer: !new:sentencepiece.SentencePieceProcessor\n"
        loadables = "        tokenizer: !ref <tokenizer>\n"
        hooks = ""
    else:
        if task is not None:
            raise InferenceError(f"{run}: a captioning run has no tasks (task={task!r})")
        if not (run / "results.json").is_file():
            raise InferenceError(f"{run}: the captioning run is not finished (no results.json)")
        weights, sample_rate = run / "model.ckpt", int(_resolved_setting(run, "sample_rate", 16000))
        extra_files = {"vocab.ckpt": run / "vocab.json"}
        what = "captioning"
        text_part = "vocab: !new:slukd.data.captions.WordVocab\n    words: []\n"
        loadables = "        vocab: !ref <vocab>\n"
        hooks = "    custom_hooks:\n        vocab: !name:slukd.export.custom_interface.load_word_vocab\n"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no model weights")
    for key in ("vocab_size", "test_beam_size", "max_decode_len", "eval_precision"):
        if key not in spec:
            raise InferenceError(f"{run / 'model.yaml'}: field {key!r} is missing")
    max_seconds = _resolved_setting(run, "max_audio_seconds", None)
    classname = EXPORT_CLASSES[kind]
    header = (
        f"{EXPORT_MARKER} of {run.resolve()} ({what}): a SpeechBrain pretrained-interface folder.\n"
        "#   from speechbrain.inference.interfaces import foreign_class\n"
        f'#   model = foreign_class(source=FOLDER, pymodule_file="custom_interface.py", classname="{classname}")\n'
        "#   model.decode_file(AUDIO)\n"
        "# Needs the slukd package (the model classes); everything is loaded from this folder.\n"
    )
    settings = {
        "kind": kind,
        "interface": classname,
        "sample_rate": sample_rate,
        "max_audio_seconds": max_seconds,
        "beam_size": int(spec["test_beam_size"]),
        "max_decode_len": int(spec["max_decode_len"]),
        "eval_precision": str(spec["eval_precision"]),
    }
    body = "".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items())
    if kind == "slu":
        body += f"tasks: {json.dumps([list(t) for t in (spec.get('tasks') or [])[:k]])}\n"
    hparams = (
        header
        + body
        + "\n"
        + _builder_yaml(run, int(spec["vocab_size"]))
        + text_part
        + "\nmodules:\n    model: !ref <model>\n\n"
        + "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        + "    loadables:\n        model: !ref <model>\n"
        + loadables
        + hooks
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.ckpt", weights.read_bytes())
    for name, src in extra_files.items():
        atomic_write_bytes(out / name, src.read_bytes())
    atomic_write_bytes(out / "model.yaml", (run / "model.yaml").read_bytes())
    interface = Path(__file__).resolve().parent / "export" / "custom_interface.py"
    atomic_write_text(out / "custom_interface.py", interface.read_text(encoding="utf-8"))
    atomic_write_text(out / "hyperparams.yaml", hparams)  # last: its marker says the export is complete
    logger.info("exported %s (%s) to %s: interface %s", run, what, out, classname)
    return out


def load_export(out_dir: PathLike, savedir: PathLike | None = None, device: str = "cpu") -> Any:
    """The interface of an exported folder through ``speechbrain.inference.interfaces.foreign_class``."""
    from speechbrain.inference.interfaces import foreign_class

    out = Path(out_dir)
    hp = out / "hyperparams.yaml"
    if not hp.is_file():
        raise FileNotFoundError(f"{hp}: not an exported model folder")
    m = re.search(r'^kind: "(\w+)"$', hp.read_text(encoding="utf-8"), re.M)
    if m is None or m.group(1) not in EXPORT_CLASSES:
        raise InferenceError(f"{hp}: no 'kind' of an slukd export")
    kind = m.group(1)
    return foreign_class(
        source=str(out.resolve()), pymodule_file="custom_interface.py", classname=EXPORT_CLASSES[kind],
        savedir=str(savedir) if savedir is not None else None, run_opts={"device": _check_device(device)},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- command line
def _parser(prog: str, mode: str) -> argparse.ArgumentParser:
    if mode == "understand":
        desc = (
            "SLU predictions for audio files with a finished SLU run: one line per file (file, intent, entities, "
            "transcript); --json prints SLURP prediction-format JSON lines instead (file, scenario, action, "
            "entities, plus intent, transcript and the decoded text)."
        )
    else:
        desc = "Captions for audio files with a finished captioning run: one 'file<TAB>caption' line per file."
    p = argparse.ArgumentParser(prog=prog, description=desc)
    p.add_argument("run_dir", help="the run folder (output_folder of the recipe)")
    p.add_argument("audio", nargs="*", help="audio files (any rate, mono or multi-channel)")
    if mode == "understand":
        p.add_argument("--task", type=int, default=None, help="use this finished task's model (default: the last)")
    p.add_argument("--out", default=None, help="also write the results here as JSON lines (atomically)")
    if mode == "understand":
        p.add_argument("--json", action="store_true", help="print JSON lines (SLURP prediction format)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch_size", type=int, default=8, help="files decoded together (default: 8)")
    p.add_argument("--beam_size", type=int, default=None, help="beam size (default: the run's test_beam_size)")
    p.add_argument(
        "--export", default=None, metavar="OUT_DIR",
        help="write a SpeechBrain pretrained-interface folder (foreign_class) for the model to OUT_DIR",
    )  # fmt: skip
    return p


def _check_files(paths: list[str], sample_rate: int) -> None:
    """Decode every file once before any model work, so a bad file stops the command at once (naming it)."""
    from slukd.data.audio import AUDIO_STATS, BadAudioError, check_audio_files

    # the notes of this check (resampled, downmixed ...) are logged once: decoding for the model does not repeat them
    check = check_audio_files(paths, target_sr=sample_rate, stats=AUDIO_STATS)
    if check.bad:
        msgs = [m for _, m in list(check.bad.values())[:3]]
        more = f" and {len(check.bad) - 3} more" if len(check.bad) > 3 else ""
        raise BadAudioError(f"{len(check.bad)} unusable audio file(s): " + "; ".join(msgs) + more)


def format_prediction(r: dict[str, Any]) -> str:
    """One readable line: ``file  intent  [type: filler; ...]  "transcript"``."""
    ents = "; ".join(f"{e['type']}: {e['filler']}" for e in r.get("entities", []))
    return f'{r["file"]}  {r["intent"]}  [{ents}]  "{r["transcript"]}"'


def cli_main(argv: list[str], prog: str = "slukd understand", mode: str = "understand") -> int:
    """``slukd understand RUN_DIR AUDIO... [--task K] [--out F] [--device D] [--batch_size N] [--beam_size N]
    [--export DIR]`` and ``slukd caption RUN_DIR AUDIO... [...]`` (see the module docstring)."""
    if mode not in ("understand", "caption"):
        raise ValueError(f"mode must be 'understand' or 'caption', got {mode!r}")
    args = _parser(prog, mode).parse_args(argv)
    try:
        return _run_cli(args, mode)
    except InferenceError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def _run_cli(args: argparse.Namespace, mode: str) -> int:
    want = "slu" if mode == "understand" else "captioning"
    kind = run_kind(args.run_dir)
    if kind != want:
        other = "slukd caption" if kind == "captioning" else "slukd understand"
        raise InferenceError(f"{args.run_dir}: this is a {kind} run; use {other}")
    task = getattr(args, "task", None)
    if not args.audio and not args.export:
        raise InferenceError("give audio files to decode, or --export OUT_DIR")
    if args.export:
        out = export_run(args.run_dir, args.export, task=task)
        print(f"exported to {out} (interface {EXPORT_CLASSES[kind]} in custom_interface.py)", file=sys.stderr)
    if not args.audio:
        return 0
    model = from_run(args.run_dir, task=task, device=args.device, beam_size=args.beam_size,
                     batch_size=args.batch_size)  # fmt: skip
    _check_files(args.audio, model.sample_rate)
    if isinstance(model, SLUModel):
        rows = model.understand_files(args.audio)
        for r in rows:
            print(json.dumps(r, ensure_ascii=False) if args.json else format_prediction(r), flush=True)
    else:
        captions = model.caption_files(args.audio)
        rows = [{"file": p, "caption": c} for p, c in zip(args.audio, captions)]
        for r in rows:
            print(f"{r['file']}\t{r['caption']}", flush=True)
    if args.out:
        from slukd.utils.io import atomic_write_jsonl

        atomic_write_jsonl(args.out, rows)
        logger.info("%d results written to %s", len(rows), args.out)
    return 0
