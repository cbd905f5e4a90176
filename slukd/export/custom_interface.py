"""SpeechBrain pretrained interfaces for runs exported by slukd (``slukd understand RUN --export DIR``,
``slukd caption RUN --export DIR`` or :func:`slukd.inference.export_run`).

    from speechbrain.inference.interfaces import foreign_class
    slu = foreign_class(source=DIR, pymodule_file="custom_interface.py", classname="SLUInterface")
    slu.decode_file("audio.wav")   # {"file", "path", "intent", "scenario", "action", "entities", "transcript", "text"}
    cap = foreign_class(source=DIR, pymodule_file="custom_interface.py", classname="CaptioningInterface")
    cap.decode_file("clip.wav")    # "a dog barks while cars pass by"

The export folder's ``hyperparams.yaml`` builds the model (``modules: {model}``) and its tokenizer (SLU, a
SentencePiece model in ``tokenizer.ckpt``) or word vocabulary (captioning, ``vocab.ckpt``); the ``pretrainer``
loads ``model.ckpt`` and those files from the folder. Decoding is the one of :mod:`slukd.inference` (same audio
reading, batching, beam size, length limit and precision), so an export decodes exactly as ``from_run`` does. The
slukd package must be installed (it defines the model classes).
"""

from __future__ import annotations

from pathlib import Path

import torch
from speechbrain.inference.interfaces import Pretrained

try:  # the model classes and decoding live in slukd: without it, one clear line instead of a deep traceback
    from slukd.data.audio import load_audio
    from slukd.data.captions import WordVocab
    from slukd.data.tokenizer import Tokenizer
    from slukd.inference import decode_waveforms, slu_result
    from slukd.train.decode import autocast
except ModuleNotFoundError as _err:
    if (_err.name or "").split(".")[0] != "slukd":
        raise
    raise ImportError(
        "this exported model needs the slukd package, which is not installed here: pip install slukd "
        "(or pip install -e <a slukd checkout>)"
    ) from None

__all__ = ["SLUInterface", "CaptioningInterface", "load_word_vocab"]


def load_word_vocab(vocab: WordVocab, path: str | Path) -> None:
    """Pretrainer hook: fill ``vocab`` in place from a ``WordVocab`` JSON file (``vocab.ckpt``)."""
    loaded = WordVocab.load(path)
    vocab.itos, vocab.stoi, vocab.max_words = loaded.itos, loaded.stoi, loaded.max_words


class _SlukdInterface(Pretrained):
    """Shared part: audio reading at the export's rate, encoding and beam search in its precision."""

    HPARAMS_NEEDED = ["sample_rate", "max_audio_seconds", "beam_size", "max_decode_len", "eval_precision"]
    MODULES_NEEDED = ["model"]

    def load_audio(self, path, savedir=None) -> torch.Tensor:
        """A local audio file as mono float32 ``[S]`` at the export's sample rate (resampled, down-mixed,
        cropped as in training); an unusable file raises an error naming it."""
        wav, _ = load_audio(path, self.hparams.sample_rate, self.hparams.max_audio_seconds, long_policy="crop")
        return wav

    def encode_batch(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        """Encoder states ``[B, T', D]`` of waveforms ``[B, S]`` with relative lengths ``[B]``."""
        wavs, wav_lens = wavs.float().to(self.device), wav_lens.to(self.device)
        with torch.no_grad(), autocast(self.device, self.hparams.eval_precision):
            return self.mods.model.encode(wavs, wav_lens)

    def decode_tokens(self, wavs: list[torch.Tensor]) -> list[list[int]]:
        """Best hypothesis (token ids) of each waveform ``[S_i]``, decoded as one padded batch."""
        return decode_waveforms(
            self.mods.model, wavs, self.hparams.beam_size, self.hparams.max_decode_len, str(self.device),
            self.hparams.eval_precision, unpadded=isinstance(self, CaptioningInterface),
        )  # fmt: skip

    def _split(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> list[torch.Tensor]:
        """Padded ``[B, S]`` + relative lengths -> the unpadded waveforms (SpeechBrain: ``round(r * S)`` samples)."""
        n = torch.round(wav_lens.float().cpu() * wavs.shape[1]).long().tolist()
        return [wavs[i, : n[i]] for i in range(wavs.shape[0])]

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor):
        """Full decoding of a batch (no gradients)."""
        return self.decode_batch(wavs, wav_lens)


class SLUInterface(_SlukdInterface):
    """An exported SLU model: speech -> intent, entities and transcript (SLURP prediction format)."""

    HPARAMS_NEEDED = _SlukdInterface.HPARAMS_NEEDED + ["tokenizer"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokenizer = Tokenizer(self.hparams.tokenizer)

    def decode_batch(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[list[str], list[list[int]]]:
        """(decoded target texts, token ids) of waveforms ``[B, S]`` with relative lengths ``[B]``, as
        EndToEndSLU returns them."""
        tokens = self.decode_tokens(self._split(wavs, wav_lens))
        return [self.tokenizer.decode(t) for t in tokens], tokens

    def decode_file(self, path, **kwargs) -> dict:
        """The SLURP prediction dict of one audio file (``text``: the decoded target)."""
        tokens = self.decode_tokens([self.load_audio(path, **kwargs)])[0]
        return slu_result(path, self.tokenizer.decode(tokens))

    def decode_files(self, paths, batch_size: int = 8) -> list[dict]:
        """SLURP prediction dicts of several files, ``batch_size`` at a time."""
        paths, out = list(paths), []
        for s in range(0, len(paths), batch_size):
            chunk = paths[s : s + batch_size]
            tokens = self.decode_tokens([self.load_audio(p) for p in chunk])
            out += [slu_result(p, self.tokenizer.decode(t)) for p, t in zip(chunk, tokens)]
        return out


class CaptioningInterface(_SlukdInterface):
    """An exported audio captioner: audio -> caption."""

    HPARAMS_NEEDED = _SlukdInterface.HPARAMS_NEEDED + ["vocab"]

    def decode_batch(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[list[str], list[list[int]]]:
        """(captions, token ids) of waveforms ``[B, S]`` with relative lengths ``[B]``."""
        tokens = self.decode_tokens(self._split(wavs, wav_lens))
        return [self.hparams.vocab.decode(t) for t in tokens], tokens

    def decode_file(self, path, **kwargs) -> str:
        """The caption of one audio file."""
        return self.hparams.vocab.decode(self.decode_tokens([self.load_audio(path, **kwargs)])[0])

    def decode_files(self, paths, batch_size: int = 8) -> list[str]:
        """Captions of several files, ``batch_size`` at a time."""
        paths, out = list(paths), []
        for s in range(0, len(paths), batch_size):
            tokens = self.decode_tokens([self.load_audio(p) for p in paths[s : s + batch_size]])
            out += [self.hparams.vocab.decode(t) for t in tokens]
        return out
