"""``slukd export``: a finished run as a folder that SpeechBrain's pretrained interfaces load.

:func:`export_run` writes a folder that ``speechbrain.inference.interfaces.foreign_class`` loads (see
``slukd/export/custom_interface.py``): ``hyperparams.yaml`` (the model, its tokenizer or vocabulary, ``modules``
and a ``pretrainer``), ``custom_interface.py``, ``model.ckpt``, ``tokenizer.ckpt`` or ``vocab.ckpt``, ``model.yaml``
and a model card ``README.md`` (what the model is, its data, its test scores, how to load it, its limits).
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import pydoc
import re
from pathlib import Path
from typing import Any

from slukd.inference.api import InferenceError, PathLike, _check_device, _resolved_setting, run_kind, select_task

logger = logging.getLogger(__name__)

__all__ = ["export_run", "load_export", "EXPORT_CLASSES", "EXPORT_MARKER"]

#: the interface class of an exported folder, by run kind (defined in ``slukd/export/custom_interface.py``)
EXPORT_CLASSES = {"slu": "SLUInterface", "captioning": "CaptioningInterface"}
EXPORT_MARKER = "# slukd export"


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
    interface = Path(__file__).resolve().parent.parent / "export" / "custom_interface.py"
    atomic_write_text(out / "custom_interface.py", interface.read_text(encoding="utf-8"))
    atomic_write_text(out / "README.md", model_card(run, kind, what, settings))
    atomic_write_text(out / "hyperparams.yaml", hparams)  # last: its marker says the export is complete
    logger.info("exported %s (%s) to %s: interface %s", run, what, out, classname)
    return out


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return {}


def model_card(run_dir: PathLike, kind: str, what: str, settings: dict[str, Any]) -> str:
    """The ``README.md`` of an export: what the model is, the data and settings it was trained with, its test
    scores as the run recorded them, how to load it, and its limits (all read from the run folder)."""
    from slukd.utils.model_io import read_model_spec

    run = Path(run_dir)
    info = _json(run / "run_info.json")
    identity = info.get("identity", {})
    flat = identity.get("settings", {}) if isinstance(identity.get("settings"), dict) else {}
    row, seed = identity.get("row", "?"), identity.get("seed", "?")
    spec = read_model_spec(run)
    classname = settings["interface"]
    lines = [f"# slukd {kind} model: row {row}, seed {seed} ({what})", ""]
    if kind == "slu":
        tasks = spec.get("tasks") or []
        k = int(what.split()[1]) if what.startswith("task ") else len(tasks)
        steps = _json(run / "results" / f"step{k}.json")
        seen = steps.get("seen", {})
        lines += [
            "Class-incremental end-to-end spoken language understanding (slukd, after Cappellazzo et al., Interspeech "
            "2023): speech in, SLURP intent, entities and transcript out.",
            "",
            f"- Scenarios it knows (tasks 1..{k}): {', '.join(s for t in tasks[:k] for s in t) or '?'}; it predicts "
            "no others.",
        ]
        if seen:
            lines.append(
                f"- Test scores after task {k} on the run's test items of every scenario seen (n = {seen.get('n')}): "
                f"intent accuracy {100 * seen.get('intent_acc', 0):.2f}%, WER {100 * seen.get('wer', 0):.2f}%, "
                f"SLU-F1 {100 * seen.get('slu_f1', 0):.2f}%."
            )
    else:
        res = _json(run / "results.json")
        test = res.get("test", {})
        lines += [
            "Audio captioning (slukd, after Xu et al., Interspeech 2024): audio in, an English caption out.",
            "",
            f"- Role: {res.get('role', '?')}; KD: {res.get('kd', '?')}; parameters: {res.get('params', '?')}.",
        ]
        if test:
            names = ("CIDEr_D", "BLEU_4", "METEOR", "ROUGE_L", "SPIDEr")
            scores = ", ".join(
                f"{k} {100 * v:.2f}" for k, v in test.items() if k in names and isinstance(v, (int, float))
            )
            lines.append(f"- Test scores of the run (percent, n = {test.get('n', '?')}): {scores}.")
    corpus, data = flat.get("corpus", "?"), flat.get("data_folder", "?")
    lines += [
        f"- Trained on: corpus {corpus} ({data}); code version {info.get('code_version', '?')}.",
        f"- Input: audio at {settings['sample_rate']} Hz (other rates are resampled, channels averaged)"
        + (f", cropped to {settings['max_audio_seconds']} s" if settings.get("max_audio_seconds") else "")
        + ".",
        f"- Decoding: beam {settings['beam_size']}, at most {settings['max_decode_len']} tokens, "
        f"{settings['eval_precision']}.",
        "",
        "## Use",
        "",
        "Needs the slukd package installed (it defines the model classes):",
        "",
        "    from speechbrain.inference.interfaces import foreign_class",
        '    model = foreign_class(source="<this folder>", pymodule_file="custom_interface.py",',
        f'                          classname="{classname}")',
        '    model.decode_file("audio.wav")',
        "",
        'or `slukd.inference.load_export("<this folder>")`.',
        "",
        "## Limits",
        "",
        "A model trained by slukd on the data named above; on the built-in synthetic corpora it has only heard "
        "espeak-ng speech or synthetic scenes, so real recordings will do worse than its test scores. It was made "
        f"from the run folder {run.resolve()} (its run_info.json and hparams_resolved.yaml record every setting).",
        "",
    ]
    return "\n".join(lines)


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
