"""The Python interface of a finished run: load its model and decode audio (files, arrays or tensors).

    from slukd.inference import from_run
    slu = from_run("results/demo/joint/seed0")                  # the last finished task's model
    slu.understand_file("turn_on_the_lights.wav")
    slu.understand([waveform_16k, "other.wav"])                 # arrays, tensors and paths mixed
    slu.understand({"array": wav_8k, "sampling_rate": 8000})    # another rate: resampled
    cap = from_run("results/captioning_kd/demo/seed0/teacher")
    cap.caption(["a.wav", torch.randn(16000)])                  # ["rain falls on a roof", ...]

A run folder is recognised by what the recipes write into it:

- SLU (``recipes/slurp_incremental.py``): ``model.yaml`` (builder, ``vocab_size``, ``test_beam_size``,
  ``max_decode_len``, ``eval_precision``, ``sample_rate``, ``tasks``), ``tokenizer/tokenizer.model`` and, per
  finished task k, ``task<k>/best_model.ckpt`` + ``task<k>/DONE``;
- captioning (``recipes/captioning_kd.py``): ``model.yaml``, ``vocab.json``, ``model.ckpt`` and ``results.json``
  (written last: the run is finished).

Inputs, as SpeechBrain's and transformers' interfaces take them: a path; a waveform (numpy array or torch tensor,
``[S]`` mono or ``[C, S]`` / ``[S, C]`` channels, averaged) at the run's sample rate unless ``sample_rate=`` says
otherwise (then resampled); or a dict ``{"array": ..., "sampling_rate": sr}`` (``"raw"`` is accepted for
``"array"``). Decoding is the recipes' test decoding: files read by :func:`slukd.data.audio.load_audio` at the run's
sample rate (other rates resampled, several channels averaged, cropped to the run's ``max_audio_seconds`` when it had
one), batched as a SpeechBrain ``PaddedBatch`` (zero padding, relative lengths ``len_i / max_j len_j``), encoded and
beam-searched (beam = the run's ``test_beam_size`` unless given) under autocast in the run's ``eval_precision``.
Padding never changes a real position's outputs, so an item decodes to the same text in any batch. With
``on_error="skip"`` an unusable input gives ``{"error": reason}`` in its place and the others are decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["InferenceError", "SLUModel", "Captioner", "from_run", "run_kind", "finished_tasks", "select_task",
           "decode_waveforms", "slu_result", "AudioInput"]  # fmt: skip

PathLike = str | os.PathLike
#: one input of :meth:`SLUModel.understand` / :meth:`Captioner.caption`: a path, a waveform or a dict with its rate
AudioInput = Any


def _is_single(inputs: Any) -> bool:
    """Whether ``inputs`` is one input (a path, a dict, a 1-D or 2-D waveform) rather than a list of inputs."""
    if isinstance(inputs, (str, os.PathLike, dict)):
        return True
    if isinstance(inputs, torch.Tensor) or type(inputs).__name__ == "ndarray":
        return True
    return False


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
    length_penalty: float | None = None,
    unpadded: bool = False,
) -> list[list[int]]:
    """Best hypothesis (token ids, no bos/eos) of each mono waveform ``[S_i]``, decoded as one batch: a SpeechBrain
    ``PaddedBatch`` (``sig`` [B, max S_i] zero-padded, relative lengths ``S_i / max S_j``), ``model.encode`` then
    :func:`slukd.train.decode.decode` under autocast in ``precision`` (as ``decode_dataset`` does; ``length_penalty``
    as the run's test decoding). With ``unpadded`` (captioning) each waveform is encoded at its own length
    (:func:`slukd.train.decode.encode_unpadded`), so its hypothesis does not depend on the others."""
    from speechbrain.dataio.batch import PaddedBatch

    from slukd.train.decode import autocast, decode, encode_unpadded

    if not wavs:
        return []
    batch = PaddedBatch([{"id": str(i), "sig": w} for i, w in enumerate(wavs)]).to(device)
    sig, lens = batch.sig
    with autocast(device, precision):
        enc, enc_lens = encode_unpadded(model, sig, lens) if unpadded else (model.encode(sig, lens), lens)
        hyps = decode(model, enc, enc_lens, beam_size, max_len, length_penalty)
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

    #: encode every input at its own length (captioning: a caption never depends on the inputs decoded with it)
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
        self.length_penalty = spec.get("length_penalty")  # the run's test decoding (SLU paper base: 0.6)
        self.sample_rate = int(sample_rate)
        max_seconds = _resolved_setting(self.run_dir, "max_audio_seconds", None)
        self.max_audio_seconds = float(max_seconds) if max_seconds is not None else None
        self.model = load_model(self.run_dir, self.weights, device=self.device)

    def load(self, path: PathLike) -> torch.Tensor:
        """One file as the recipes read it: mono float32 ``[S]`` at the run's rate (AudioError names the file)."""
        from slukd.data.audio import load_audio

        return load_audio(path, self.sample_rate, self.max_audio_seconds, long_policy="crop")[0]

    def waveform(self, x: AudioInput, sample_rate: int | None = None) -> torch.Tensor:
        """One input as mono float32 ``[S]`` at the run's rate: a path (read as the recipes read it), a numpy array or
        tensor (``[S]``, ``[C, S]`` or ``[S, C]``; channels averaged) at ``sample_rate`` (default: the run's; another
        rate is resampled), or ``{"array" | "raw": waveform, "sampling_rate": sr}``. Cropped like training data.
        An unusable input raises :class:`InferenceError` (or the audio error naming the file)."""
        if isinstance(x, (str, os.PathLike)):
            return self.load(x)
        if isinstance(x, dict):
            if "sampling_rate" not in x or not ({"array", "raw"} & set(x)):
                raise InferenceError(
                    f"an input dict needs 'array' (or 'raw') and 'sampling_rate'; got keys {sorted(x)}"
                )
            return self.waveform(x["array"] if "array" in x else x["raw"], int(x["sampling_rate"]))
        try:
            wav = torch.as_tensor(x).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise InferenceError(f"input of type {type(x).__name__} is neither a path nor a waveform ({err})") from None
        if wav.dim() == 2:  # channels: the short axis
            wav = wav.float().mean(dim=0 if wav.shape[0] <= wav.shape[1] else 1)
        if wav.dim() != 1 or wav.numel() == 0:
            raise InferenceError(f"a waveform must be [S], [C, S] or [S, C] with samples; got shape {tuple(wav.shape)}")
        if not (wav.is_floating_point() or wav.dtype in (torch.int16, torch.int32)):
            raise InferenceError(f"a waveform must hold numbers (float or int16/int32 PCM); got {wav.dtype}")
        if wav.dtype == torch.int16:
            wav = wav.float() / 32768.0
        elif wav.dtype == torch.int32:
            wav = wav.float() / 2147483648.0
        wav = wav.float()
        if not torch.isfinite(wav).all():
            raise InferenceError("the waveform holds NaN or infinite samples")
        sr = self.sample_rate if sample_rate is None else int(sample_rate)
        if sr != self.sample_rate:
            import torchaudio

            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        if self.max_audio_seconds is not None:
            wav = wav[: int(self.max_audio_seconds * self.sample_rate)]
        return wav.contiguous()

    def decode_inputs(
        self, inputs: Sequence[AudioInput], sample_rate: int | None = None, on_error: str = "raise"
    ) -> list[list[int] | str]:
        """Token ids of each input, ``batch_size`` inputs per batch, in the order given. ``on_error="skip"``: an
        unusable input gives its error message (a ``str``) in its place and the others are still decoded."""
        from slukd.data.audio import AudioError, BadAudioError

        if on_error not in ("raise", "skip"):
            raise InferenceError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        wavs: list[torch.Tensor | str] = []
        for x in inputs:
            try:
                wavs.append(self.waveform(x, sample_rate))
            except (InferenceError, AudioError, BadAudioError, FileNotFoundError, OSError) as err:
                if on_error == "raise":
                    raise
                wavs.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
        good = [i for i, w in enumerate(wavs) if not isinstance(w, str)]
        out: list[list[int] | str] = list(wavs)  # errors stay in place
        for start in range(0, len(good), self.batch_size):
            idx = good[start : start + self.batch_size]
            hyps = decode_waveforms(self.model, [wavs[i] for i in idx], self.beam_size, self.max_decode_len,
                                    self.device, self.precision, length_penalty=self.length_penalty,
                                    unpadded=self.unpadded)  # fmt: skip
            for i, h in zip(idx, hyps):
                out[i] = h
        return out

    def decode_paths(self, paths: Sequence[PathLike]) -> list[list[int]]:
        """Token ids of each file, ``batch_size`` files per batch, in the order given."""
        return self.decode_inputs(list(paths))  # type: ignore[return-value]


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

    def understand(
        self, inputs: AudioInput | Sequence[AudioInput], sample_rate: int | None = None, on_error: str = "raise"
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """SLURP prediction dicts (see :func:`slu_result`) of paths, waveforms or ``{"array", "sampling_rate"}``
        dicts (see :meth:`waveform`); one input gives one dict, a list gives a list. Arrays are named
        ``input<i>``. ``on_error="skip"``: an unusable input gives ``{"file", "path", "error"}``."""
        single = _is_single(inputs)
        items = [inputs] if single else list(inputs)  # type: ignore[list-item]
        out = []
        for i, (x, h) in enumerate(zip(items, self.decode_inputs(items, sample_rate, on_error))):
            name = str(x) if isinstance(x, (str, os.PathLike)) else f"input{i}"
            if isinstance(h, str):
                out.append({"file": os.path.basename(name), "path": name, "error": h})
            else:
                out.append(slu_result(name, self.tokenizer.decode(h)))
        return out[0] if single else out

    def understand_files(self, paths: Sequence[PathLike], on_error: str = "raise") -> list[dict[str, Any]]:
        """One SLURP prediction dict per file (see :func:`slu_result`), decoded ``batch_size`` files at a time."""
        return self.understand(list(paths), on_error=on_error)  # type: ignore[return-value]

    def understand_file(self, path: PathLike) -> dict[str, Any]:
        """The SLURP prediction dict of one file."""
        return self.understand_files([path])[0]


class Captioner(_RunModel):
    """The model of a finished captioning run, with its word vocabulary: audio -> caption."""

    unpadded = True

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

    def caption(
        self, inputs: AudioInput | Sequence[AudioInput], sample_rate: int | None = None, on_error: str = "raise"
    ) -> str | list[str | None]:
        """Captions of paths, waveforms or ``{"array", "sampling_rate"}`` dicts (see :meth:`waveform`); one input
        gives one caption, a list gives a list. ``on_error="skip"``: an unusable input gives ``None`` (its reason:
        :meth:`caption_results`)."""
        single = _is_single(inputs)
        items = [inputs] if single else list(inputs)  # type: ignore[list-item]
        out = [None if isinstance(h, str) else self.vocab.decode(h) for h in self.decode_inputs(items, sample_rate,
                                                                                               on_error)]  # fmt: skip
        return out[0] if single else out  # type: ignore[return-value]

    def caption_results(self, inputs: Sequence[AudioInput], sample_rate: int | None = None) -> list[dict[str, Any]]:
        """``{"file", "caption"}`` per input, or ``{"file", "error"}`` for an unusable one (the others decoded)."""
        items = list(inputs)
        rows = []
        for i, (x, h) in enumerate(zip(items, self.decode_inputs(items, sample_rate, on_error="skip"))):
            name = str(x) if isinstance(x, (str, os.PathLike)) else f"input{i}"
            rows.append(
                {"file": name, "error": h} if isinstance(h, str) else {"file": name, "caption": self.vocab.decode(h)}
            )
        return rows

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
