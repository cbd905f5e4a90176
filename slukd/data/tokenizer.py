"""SentencePiece tokenizer for decoder targets, with the target's special symbols kept as whole tokens.

Ids: pad=0, bos=1, eos=2, unk=3. Normalisation is the identity (no NFKC), so ``decode(encode(t)) == t`` for any
whitespace-normalised text made of characters seen in training. Training is single-threaded and deterministic.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import sentencepiece as spm

logger = logging.getLogger(__name__)

MODEL_NAME = "tokenizer.model"
WB = "\u2581"  # SentencePiece word-boundary mark


class Tokenizer:
    """A thin wrapper around a trained SentencePiece model."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: Path | None = None) -> None:
        self.sp = processor
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load ``path`` (a ``.model`` file, or a folder holding ``tokenizer.model``)."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_NAME
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        sp = spm.SentencePieceProcessor()
        sp.Load(str(path))
        return cls(sp, path)

    @property
    def vocab_size(self) -> int:
        return int(self.sp.GetPieceSize())

    @property
    def pad_id(self) -> int:
        return int(self.sp.pad_id())

    @property
    def bos_id(self) -> int:
        return int(self.sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self.sp.eos_id())

    @property
    def unk_id(self) -> int:
        return int(self.sp.unk_id())

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (no bos/eos added)."""
        return list(self.sp.EncodeAsIds(text))

    def encode_pieces(self, text: str) -> list[str]:
        return list(self.sp.EncodeAsPieces(text))

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text. Pad, bos and eos ids are dropped first."""
        special = {self.pad_id, self.bos_id, self.eos_id}
        return self.sp.DecodeIds([int(i) for i in ids if int(i) not in special])

    def id_to_piece(self, i: int) -> str:
        return self.sp.IdToPiece(int(i))


def sp_user_symbols(symbols: list[str]) -> list[str]:
    """SentencePiece symbols for whole words: each symbol is registered with the word-boundary mark (``"▁date"``),
    so it is one token where it stands as a word but does not split other words (``"update"``); symbols starting
    with "_" (the target's separators) are registered bare as well, so they stay whole even when glued to a word."""
    out: list[str] = []
    for s in symbols:
        out.append(WB + s)
        if s.startswith("_"):
            out.append(s)
    return list(dict.fromkeys(out))


def train_tokenizer(
    texts: list[str],
    out_dir: str | os.PathLike,
    vocab_size: int,
    user_symbols: list[str] | tuple[str, ...] = (),
    model_type: str = "unigram",
) -> Tokenizer:
    """Train a SentencePiece model on ``texts`` and save it as ``out_dir/tokenizer.model``.

    ``user_symbols`` become user-defined symbols (one token each where they stand as words; see
    :func:`sp_user_symbols`). When ``vocab_size`` is larger than the text allows,
    it is shrunk to the largest size SentencePiece accepts (logged). Deterministic for the same inputs.
    """
    if model_type not in ("unigram", "bpe", "char", "word"):
        raise ValueError(f"unknown model_type {model_type!r}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_tokenizer: no non-empty training text")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "tokenizer_train.txt"
    corpus.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    symbols = [s for s in dict.fromkeys(user_symbols) if s]
    for s in symbols:
        if any(c.isspace() for c in s):
            raise ValueError(f"user symbol contains whitespace: {s!r}")
    symbols = sp_user_symbols(symbols)
    prefix = out_dir / "tokenizer"
    # smallest sensible size: the 4 specials + the user symbols + every distinct character + a margin
    n_chars = len({c for t in texts for c in t if not c.isspace()}) + 1
    size = max(int(vocab_size), 4 + len(symbols) + n_chars)
    if size != vocab_size:
        logger.info("tokenizer vocab_size raised from %d to %d (specials + symbols + characters)", vocab_size, size)
    for _attempt in range(8):
        try:
            spm.SentencePieceTrainer.Train(
                input=str(corpus),
                model_prefix=str(prefix),
                vocab_size=size,
                model_type=model_type,
                character_coverage=1.0,
                pad_id=0,
                bos_id=1,
                eos_id=2,
                unk_id=3,
                user_defined_symbols=symbols,
                normalization_rule_name="identity",
                hard_vocab_limit=model_type != "unigram",
                num_threads=1,
                shuffle_input_sentence=False,
                split_digits=False,
                max_sentence_length=1 << 16,
                minloglevel=2,
            )
            break
        except RuntimeError as err:
            m = re.search(r"<=\s*(\d+)", str(err))
            if m is None or int(m.group(1)) >= size:
                raise
            logger.info("tokenizer vocab_size %d too large for this text: using %s", size, m.group(1))
            size = int(m.group(1))
    model = Path(str(prefix) + ".model")
    final = out_dir / MODEL_NAME
    if model != final:
        os.replace(model, final)
    vocab = Path(str(prefix) + ".vocab")
    if vocab.exists():
        os.replace(vocab, out_dir / "tokenizer.vocab")
    tok = Tokenizer.load(final)
    logger.info(
        "trained %s tokenizer: %d pieces (%d user symbols) -> %s", model_type, tok.vocab_size, len(symbols), final
    )
    return tok
