"""Tests of slukd.models.paper_caption: HTSAT + BART teacher and EfficientNet-B2 student, from tiny random checkpoints
saved to tmp_path; forward, a training step, the cached decoder against teacher forcing and SpeechBrain's searcher."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from slukd.captioning.models import build_model  # noqa: E402
from slukd.models import Seq2Seq, count_parameters  # noqa: E402
from slukd.models.decoding import beam_search, greedy_search, stock_searcher  # noqa: E402
from slukd.models.paper_caption import (  # noqa: E402
    BartCaptioner,
    HTSATEncoder,
    load_student,
    paper_student,
    paper_teacher,
)

V = 30
# 16 mels, a 64 x 64 "image" of 256 frames, 2 stages: 32 output frames per chunk (8x fewer frames), 32 channels
HTSAT_TINY = {
    "spec_size": 64,
    "num_mel_bins": 16,
    "patch_embeds_hidden_size": 16,
    "depths": [1, 1],
    "num_attention_heads": [2, 2],
    "window_size": 4,
    "hidden_size": 32,
}
BART_TINY = {
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 64,
    "dropout": 0.0,
}
TINY_STUDENT = {
    "cnn": {"width": 0.25, "depth": 0.5, "max_stages": 4, "time_stride_stages": [0, 2], "head_channels": 64}
}


def save_checkpoints(folder, bart_vocab: int = V) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny CLAP model (text + HTSAT audio tower) and a tiny BartModel, saved with save_pretrained under folder."""
    torch.manual_seed(0)
    text = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    text["intermediate_size"] = 32
    clap = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=HTSAT_TINY, projection_dim=8))
    clap.save_pretrained(str(folder / "clap"))
    ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}
    bart = transformers.BartModel(transformers.BartConfig(vocab_size=bart_vocab, **BART_TINY, **ids))
    bart.save_pretrained(str(folder / "bart"))
    return clap, bart


def tiny_teacher(**kw) -> BartCaptioner:
    torch.manual_seed(0)
    kw.setdefault("htsat_config", HTSAT_TINY)
    kw.setdefault("bart_config", BART_TINY)
    return paper_teacher(V, n_mels=16, **kw)


def _clips(b: int, seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


def test_htsat_frames_chunks_and_padding():
    torch.manual_seed(0)
    enc = HTSATEncoder(config=HTSAT_TINY).eval()
    assert (enc.out_dim, enc.chunk_frames, enc.frames_per_chunk) == (32, 256, 32)
    feats = torch.randn(2, 301, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = enc(feats, torch.tensor([1.0, 0.5]))
        first = enc(feats[:, :256], torch.ones(2))
    assert out.shape == (2, 38, 32)  # ceil(301 * 32 / 256)
    assert torch.all(out[1, 19:] == 0) and bool(out[1, :19].abs().sum(-1).gt(0).all())
    torch.testing.assert_close(out[0, :32], first[0])  # chunks are encoded independently
    assert enc(torch.randn(1, 101, 16), torch.ones(1)).shape == (1, 13, 32)
    with pytest.raises(ValueError, match=r"feats \[B, T, 16\]"):
        enc(torch.randn(1, 101, 64), torch.ones(1))


def test_htsat_and_bart_load_from_checkpoint_folders(tmp_path, caplog):
    clap, bart = save_checkpoints(tmp_path)
    enc = HTSATEncoder(tmp_path / "clap")
    want = clap.audio_model.state_dict()
    assert all(torch.equal(want[k], v) for k, v in enc.model.state_dict().items())
    # a ClapAudioModel checkpoint (no "audio_model." prefix) loads the same way
    clap.audio_model.save_pretrained(str(tmp_path / "audio"))
    enc2 = HTSATEncoder(tmp_path / "audio")
    assert all(torch.equal(want[k], v) for k, v in enc2.model.state_dict().items())

    same = BartCaptioner(V, encoder=enc, bart_source=tmp_path / "bart", n_mels=16, pad_index=1, bos_index=2)
    ref = bart.state_dict()
    for prefix, module in (("decoder.", same.decoder), ("encoder.", same.bart_encoder)):
        for k, v in module.state_dict().items():
            assert torch.equal(ref[prefix + k], v), prefix + k
    assert same.out_lin.weight is same.decoder.embed_tokens.weight  # tied, as BART's LM head
    assert same.bart_encoder.embed_tokens is None  # inputs_embeds only: no unused embedding
    # another vocabulary (pad 0): a new embedding, the rest of BART kept
    other = BartCaptioner(V + 5, encoder=enc, bart_source=tmp_path / "bart", n_mels=16)
    assert other.decoder.embed_tokens.weight.shape == (V + 5, 32)
    assert torch.all(other.decoder.embed_tokens.weight[0] == 0)
    assert torch.equal(other.decoder.layers[1].fc1.weight, ref["decoder.layers.1.fc1.weight"])
    assert "a new embedding" in caplog.text

    with pytest.raises(FileNotFoundError, match="not a local folder"):
        HTSATEncoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="model_type 'bart'"):
        HTSATEncoder(tmp_path / "bart")
    with pytest.raises(ValueError, match="expected 'bart'"):
        BartCaptioner(V, encoder=enc, bart_source=tmp_path / "clap")
    with pytest.raises(ValueError, match="not both"):
        HTSATEncoder(tmp_path / "clap", config=HTSAT_TINY)
    with pytest.raises(ValueError, match="must not set"):
        BartCaptioner(V, encoder=enc, bart_config={"vocab_size": 7})


def test_teacher_forward_and_training_step(tmp_path):
    save_checkpoints(tmp_path)
    model = paper_teacher(
        V, htsat_source=tmp_path / "clap", bart_source=tmp_path / "bart", n_mels=16, pad_index=1, bos_index=2
    ).train()
    assert model.encoder_dim == 32 and model.d_model == 32 and model.ctc_lin is None
    wavs, lens = _clips(3, 1.0), torch.tensor([1.0, 0.7, 0.4])
    tokens = torch.randint(3, V, (3, 6), generator=torch.Generator().manual_seed(0))
    bos_in = torch.cat([torch.full((3, 1), 2), tokens[:, :-1]], dim=1)
    out = model(wavs, lens, bos_in)
    assert out.enc.shape == (3, 13, 32) and out.logits.shape == (3, 6, V) and out.ctc_log_probs is None
    groups = model.parameter_groups(lr=1e-3, encoder_lr=1e-4)
    assert [g["name"] for g in groups] == ["encoder", "other"]
    opt = torch.optim.AdamW(groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, V), tokens.reshape(-1))
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "relative_position_bias_table" not in n)
    opt.step()
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("decoder.layers"))
    assert not torch.equal(
        model.encoder.model.audio_encoder.norm.weight, before["encoder.model.audio_encoder.norm.weight"]
    )

    frozen = tiny_teacher(freeze_htsat=True).train()
    assert not frozen.encoder.model.training and frozen.encoder_parameters() == []
    assert [g["name"] for g in frozen.parameter_groups(lr=1e-3, encoder_lr=1e-4)] == ["other"]


@pytest.fixture(scope="module")
def memorised_teacher():
    """A tiny teacher whose decoder memorised 12 (encoder frames -> caption) pairs, and 24 test inputs."""
    model = tiny_teacher()
    g = torch.Generator().manual_seed(0)
    n = 12
    lens = torch.linspace(0.5, 1.0, n)
    with torch.no_grad():
        enc = model.eval().encode(_clips(n, 1.0, seed=3), lens)
    caps = [torch.randint(3, V, (int(k),), generator=g).tolist() for k in torch.randint(2, 7, (n,), generator=g)]
    bos_in = torch.zeros(n, 8, dtype=torch.long)
    tgt = torch.zeros(n, 8, dtype=torch.long)
    for i, c in enumerate(caps):
        bos_in[i, 0], bos_in[i, 1 : 1 + len(c)] = 1, torch.tensor(c)
        tgt[i, : len(c)], tgt[i, len(c)] = torch.tensor(c), 2
    params = [p for n_, p in model.named_parameters() if not n_.startswith("encoder.")]
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for _ in range(300):
        logits = model.decode(enc, lens, bos_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval()
    test_enc = torch.cat([enc, enc + 1.5 * torch.randn(enc.shape, generator=g)])
    return model, test_enc, lens.repeat(2), caps


def test_cached_step_equals_teacher_forcing(memorised_teacher):
    model, enc, lens, caps = memorised_teacher
    seq = torch.tensor([[1] + caps[0] + [5] * (8 - len(caps[0]))] * 4)
    idx = torch.tensor([0, 5, 13, 20])
    with torch.no_grad():
        ref = torch.log_softmax(model.decode(enc[idx], lens[idx], seq).float(), -1)
        state = model.init_state(enc[idx], lens[idx], group=2)  # 2 rows per item
        for t in range(seq.shape[1]):
            lp, state = model.step(seq.repeat_interleave(2, 0)[:, t], state)
            torch.testing.assert_close(lp, ref.repeat_interleave(2, 0)[:, t], atol=1e-5, rtol=1e-4)
            if t == 3:  # drop item 1 (rows 2, 3): the caches follow
                state = model.reorder_state(state, torch.tensor([0, 1, 4, 5, 6, 7]))
                ref, seq = ref[[0, 2, 3]], seq[[0, 2, 3]]
    assert state.step == seq.shape[1] and state.num_rows == 6


def test_beam_search_matches_speechbrain_on_the_teacher(memorised_teacher):
    model, enc, lens, caps = memorised_teacher
    assert greedy_search(model, enc[:12], lens[:12]) == caps
    ours = beam_search(model, enc, lens, beam_size=3, speechbrain_compat=True)
    with torch.no_grad():
        hyps, _, scores, _ = stock_searcher(model, 3)(enc, lens)
    assert [o[0].tokens for o in ours] == hyps
    torch.testing.assert_close(torch.tensor([o[0].score for o in ours]), scores.view(-1).float(), atol=1e-4, rtol=0)
    assert [h[0].tokens for h in beam_search(model, enc[:12], lens[:12], beam_size=3)] == caps
    # an item decodes the same alone as in the batch (per-item cross-attention caches)
    alone = beam_search(model, enc[15:16], lens[15:16], beam_size=3, nbest=2)[0]
    batch = beam_search(model, enc, lens, beam_size=3, nbest=2)[15]
    assert [h.tokens for h in alone] == [h.tokens for h in batch]


def test_student_is_the_paper_size_and_loads_a_state_dict(tmp_path):
    big = paper_student(4400)
    assert isinstance(big, Seq2Seq) and big.encoder_dim == 1408 and big.encoder.time_downsampling == 32
    assert 10e6 < count_parameters(big) < 14e6
    assert (big.d_model, big.nhead, len(big.decoder.layers)) == (256, 4, 2)
    assert big.decoder.layers[0].pos_ffn.ffn[0].out_features == 1024
    small = paper_student(V, TINY_STUDENT).eval()
    torch.save(small.state_dict(), tmp_path / "student.pt")
    torch.manual_seed(5)
    loaded = load_student(tmp_path / "student.pt", V, TINY_STUDENT).eval()
    wavs, lens = _clips(2, 1.0), torch.tensor([1.0, 0.6])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(wavs, lens), small.encode(wavs, lens))
    torch.save({"model": small.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    assert load_student(tmp_path / "ckpt.pt", V, TINY_STUDENT).encoder_dim == small.encoder_dim
    with pytest.raises(ValueError, match="student.pt is not a state_dict of this student"):
        load_student(tmp_path / "student.pt", V + 1, TINY_STUDENT)
    with pytest.raises(FileNotFoundError, match="no file"):
        load_student(tmp_path / "none.pt", V)


def test_paper_size_teacher_has_the_papers_size():
    """HTSAT-base + BART-base (encoder and decoder, BART's 50265-token vocabulary): about 170M parameters."""
    torch.manual_seed(0)
    teacher = paper_teacher()
    n = count_parameters(teacher)
    assert 160e6 < n < 180e6, n
    assert teacher.encoder_dim == 768 and teacher.d_model == 768 and len(teacher.decoder.layers) == 6
    assert teacher.encoder.chunk_frames == 1024 and teacher.encoder.frames_per_chunk == 32


def test_caption_spec_and_yaml_build_the_teacher(tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    save_checkpoints(tmp_path)
    spec = {
        "encoder": "htsat_bart",
        "htsat_source": str(tmp_path / "clap"),
        "bart_source": str(tmp_path / "bart"),
        "n_mels": 16,
    }
    model = build_model(spec, V)
    assert isinstance(model, BartCaptioner) and model.encoder_dim == 32
    with pytest.raises(ValueError, match="unknown keys in a htsat_bart model spec"):
        build_model({**spec, "d_model": 3}, V)
    text = f"""
teacher: !new:slukd.models.paper_caption.BartCaptioner
    vocab_size: {V}
    n_mels: 16
    encoder: !new:slukd.models.paper_caption.HTSATEncoder
        source: {tmp_path / "clap"}
        freeze: True
    bart_source: {tmp_path / "bart"}
student: !apply:slukd.models.paper_caption.paper_student
    vocab_size: {V}
    spec: {TINY_STUDENT}
"""
    hp = load_hyperpyyaml(text)
    assert hp["teacher"].encoder.freeze and hp["teacher"].vocab_size == V
    assert isinstance(hp["student"], Seq2Seq)
    wavs, lens = _clips(2, 1.0), torch.ones(2)
    hyps = beam_search(hp["teacher"].eval(), hp["teacher"].encode(wavs, lens), lens, beam_size=2, max_len=4)
    assert len(hyps) == 2 and all(len(h[0].tokens) <= 4 for h in hyps)
