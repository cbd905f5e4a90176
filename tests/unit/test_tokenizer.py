"""slukd.data.tokenizer: ids, whole special symbols, exact round trip, oversized vocab, determinism."""

from __future__ import annotations

import json

from slukd.data.target import SLURP_ENTITY_TYPES, SLURP_INTENTS, serialise, special_tokens
from slukd.data.tokenizer import Tokenizer, train_tokenizer

TEXTS = [
    serialise("alarm", "set", [{"type": "time", "filler": "seven am"}], "wake me up at seven am"),
    serialise("iot", "hue_lightoff", [{"type": "house_place", "filler": "kitchen"}], "lights off in the kitchen"),
    serialise("qa", "maths", [], "what is two plus two"),
    serialise(
        "calendar",
        "set",
        [{"type": "date", "filler": "monday"}, {"type": "time", "filler": "noon"}],
        "update the date to monday at noon",
    ),
] * 5


def test_specials_whole_and_round_trip(tmp_path):
    syms = special_tokens(
        ["alarm_set", "iot_hue_lightoff", "qa_maths", "calendar_set"], ["time", "house_place", "date"]
    )
    tok = train_tokenizer(TEXTS, tmp_path, vocab_size=60, user_symbols=syms)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    for t in TEXTS:
        assert tok.decode(tok.encode(t)) == t
    pieces = tok.encode_pieces(TEXTS[1])
    assert "\u2581iot_hue_lightoff" in pieces and "\u2581_SEP" in pieces and "\u2581house_place" in pieces
    # an entity type inside another word does not split it into the symbol
    assert "date" not in [p.lstrip("\u2581") for p in tok.encode_pieces("update")]
    # specials are dropped by decode
    assert tok.decode([tok.bos_id, *tok.encode("qa_maths _SEP two"), tok.eos_id, 0, 0]) == "qa_maths _SEP two"
    again = Tokenizer.load(tmp_path)
    assert again.encode(TEXTS[3]) == tok.encode(TEXTS[3]) and again.vocab_size == tok.vocab_size


def test_vocab_too_large_is_shrunk_and_deterministic(tmp_path):
    syms = special_tokens(SLURP_INTENTS, SLURP_ENTITY_TYPES)
    a = train_tokenizer(TEXTS, tmp_path / "a", vocab_size=5000, user_symbols=syms)
    b = train_tokenizer(TEXTS, tmp_path / "b", vocab_size=5000, user_symbols=syms)
    assert len(syms) < a.vocab_size < 5000
    assert [a.id_to_piece(i) for i in range(a.vocab_size)] == [b.id_to_piece(i) for i in range(b.vocab_size)]
    assert [a.sp.GetScore(i) for i in range(a.vocab_size)] == [b.sp.GetScore(i) for i in range(b.vocab_size)]
    assert [a.decode(a.encode(t)) for t in TEXTS] == TEXTS
    c = train_tokenizer(TEXTS, tmp_path / "c", vocab_size=5000, user_symbols=syms, model_type="bpe")
    assert [c.decode(c.encode(t)) for t in TEXTS] == TEXTS


def test_real_slurp_targets_round_trip(tmp_path, shared_slurp):
    from slukd.data.slurp import prepare_slurp, read_manifest

    paths = prepare_slurp(shared_slurp, tmp_path / "m", splits=("devel",), audio_check=False)
    rows = read_manifest(paths["devel"])
    targets = sorted({r["target"] for r in rows})
    tok = train_tokenizer(targets, tmp_path / "tok", 1000, special_tokens(SLURP_INTENTS, SLURP_ENTITY_TYPES))
    assert all(tok.decode(tok.encode(t)) == t for t in targets)
    assert json.dumps(rows[0]["entities"])  # decoded list from the manifest


def _is_bpe(tok: Tokenizer) -> bool:
    """A SentencePiece BPE model scores its merged pieces by rank (0, -1, -2, ...); a unigram model by log-prob."""
    scores = [tok.sp.GetScore(i) for i in range(4, tok.vocab_size)]
    return all(float(s).is_integer() for s in scores)


def test_the_slu_run_trains_the_tokenizer_type_its_config_names(tmp_path):
    """prepare_tokenizer honours ``tokenizer_type`` (the SLU paper: BPE); unigram stays the default of base.yaml."""
    from slukd.config import load_hparams
    from slukd.slu.prepare import SLUData, prepare_tokenizer
    from tests.conftest import REPO

    rows = [{"target": t, "intent": "alarm_set", "entities": []} for t in TEXTS]
    data = SLUData(rows={"train": rows, "devel": [], "test": []}, root=str(tmp_path))
    made = {}
    for kind in ("bpe", "unigram"):
        made[kind] = prepare_tokenizer({"vocab_size": 1000, "tokenizer_type": kind}, tmp_path / kind, data)
        assert [made[kind].decode(made[kind].encode(t)) for t in TEXTS] == TEXTS
    assert _is_bpe(made["bpe"]) and not _is_bpe(made["unigram"])
    hp, _ = load_hparams(REPO / "hparams" / "slurp_incremental" / "seq_kd.yaml")
    assert hp["tokenizer_type"] == "unigram"
