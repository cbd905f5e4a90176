"""Tests of slukd.models.pretrained: wav2vec2 / HuBERT / WavLM checkpoints (tiny, random, saved to tmp_path) loaded
through SpeechBrain's Hugging Face lobe into a Seq2Seq: weights, lengths, freezing, a training step, beam search."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from slukd.models import Seq2Seq  # noqa: E402
from slukd.models.decoding import beam_search, greedy_search  # noqa: E402
from slukd.models.pretrained import MaskedGroupNorm, RawWaveform, SSLEncoder  # noqa: E402

V = 20
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16),
    "conv_kernel": (10, 3, 3),
    "conv_stride": (5, 2, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
}
KINDS = {
    # wav2vec2-base layout: GroupNorm in the first convolution, post-norm transformer
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", {"feat_extract_norm": "group"}),
    # large-model layout: LayerNorm convolutions, pre-norm ("stable") transformer
    "hubert": ("HubertConfig", "HubertModel", {"feat_extract_norm": "layer", "do_stable_layer_norm": True}),
    "wavlm": (
        "WavLMConfig",
        "WavLMModel",
        {"feat_extract_norm": "group", "num_buckets": 16, "max_bucket_distance": 50},
    ),
}


def save_tiny(kind: str, folder, seed: int = 0) -> torch.nn.Module:
    """A tiny random checkpoint of ``kind`` written with save_pretrained (model + feature extractor); returns it."""
    cfg_name, model_name, extra = KINDS[kind]
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(getattr(transformers, cfg_name)(**SMALL, **extra))
    model.save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(str(folder))
    return model


def ssl_seq2seq(folder, **enc_kw) -> Seq2Seq:
    torch.manual_seed(1)
    enc = SSLEncoder(folder, **enc_kw)
    return Seq2Seq(
        V, encoder=enc, features=RawWaveform(), d_model=32, nhead=2, num_decoder_layers=2, d_ffn=64, dropout=0.0
    )


def _wavs(b: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_loads_the_checkpoint_weights(kind, tmp_path):
    ref = save_tiny(kind, tmp_path)
    enc = SSLEncoder(tmp_path)
    assert type(enc.model).__name__ == type(ref).__name__ and enc.out_dim == 32
    want, got = ref.state_dict(), enc.model.state_dict()
    assert set(want) == set(got) and set(enc.state_dict()) == {"lobe.model." + k for k in want}
    assert all(torch.equal(want[k], got[k]) for k in want)
    # 4000 samples -> (4000 - 10) // 5 + 1 = 799 -> 399 -> 199 frames
    out = enc.eval()(_wavs(2, 4000), torch.tensor([1.0, 0.5]))
    assert out.shape == (2, 199, 32) and enc.num_frames(4000) == 199
    assert torch.all(out[1, 100:] == 0) and bool(out[1, :100].abs().sum(-1).gt(0).all())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_padding_does_not_change_real_frames(kind, tmp_path):
    """An utterance alone equals the same utterance padded in a batch (normalisation, GroupNorm, attention masked)."""
    save_tiny(kind, tmp_path)
    enc = SSLEncoder(tmp_path).eval()
    wavs = _wavs(2, 4000, seed=3) * torch.tensor([[1.0], [3.0]])
    n = 2200  # round(0.55 * 199) = 109 frames = the frames of 2200 samples alone
    lens = torch.tensor([1.0, n / 4000])
    with torch.no_grad():
        batch = enc(wavs, lens)
        alone = enc(wavs[1:, :n], torch.ones(1))
    assert alone.shape[1] == 109 == int(torch.round(lens[1] * batch.shape[1]))
    torch.testing.assert_close(batch[1, :109], alone[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(batch[0], enc(wavs[:1], torch.ones(1)).detach()[0], atol=2e-5, rtol=1e-4)
    if enc.group_norm is not None:  # without the masked statistics, padding leaks into the real frames
        assert isinstance(enc.group_norm, MaskedGroupNorm)
        enc.mask_group_norm = False
        with torch.no_grad():
            leaky = enc(wavs, lens)
        assert (leaky[1, :109] - alone[0]).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("kind", "freeze", "freeze_layers"),
    [
        ("wav2vec2", "finetune", 0),
        ("wav2vec2", "frozen", 0),
        ("wav2vec2", "partial", 0),
        ("wav2vec2", "partial", 1),
        ("hubert", "partial", 1),
        ("wavlm", "partial", 1),
    ],
)
def test_training_step_and_freeze_modes(kind, freeze, freeze_layers, tmp_path):
    save_tiny(kind, tmp_path)
    model = ssl_seq2seq(tmp_path, freeze=freeze, freeze_layers=freeze_layers).train()
    hf = model.encoder.model
    layers = hf.encoder.layers
    if freeze == "frozen":
        frozen = list(hf.parameters())
    elif freeze == "partial":
        frozen = list(hf.feature_extractor.parameters())
        if freeze_layers:
            frozen += list(hf.feature_projection.parameters()) + list(hf.encoder.pos_conv_embed.parameters())
            frozen += [hf.masked_spec_embed]
            if not hf.config.do_stable_layer_norm:  # post-norm: the encoder's LayerNorm runs before layer 0
                frozen += list(hf.encoder.layer_norm.parameters())
            frozen += [p for layer in layers[:freeze_layers] for p in layer.parameters()]
    else:
        frozen = []
    frozen_ids = {id(p) for p in frozen}
    trainable_enc = [p for p in hf.parameters() if id(p) not in frozen_ids]
    assert all(not p.requires_grad for p in frozen) and all(p.requires_grad for p in trainable_enc)
    # frozen parts stay in eval mode inside a model in training mode
    assert hf.feature_extractor.training == (freeze == "finetune")
    assert layers[0].training == (freeze == "finetune" or (freeze == "partial" and freeze_layers == 0))

    groups = model.parameter_groups(lr=1e-3, encoder_lr=1e-4)
    names = [g["name"] for g in groups]
    assert names == (["other"] if freeze == "frozen" else ["encoder", "other"])
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters() if p.requires_grad}
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    assert [g["lr"] for g in opt.param_groups] == ([1e-3] if freeze == "frozen" else [1e-4, 1e-3])

    wavs, lens = _wavs(3, 4000, seed=5), torch.tensor([1.0, 0.8, 0.6])
    tokens = torch.randint(3, V, (3, 5), generator=torch.Generator().manual_seed(0))
    bos_in = torch.cat([torch.ones(3, 1, dtype=torch.long), tokens[:, :-1]], dim=1)
    out = model(wavs, lens, bos_in)
    assert out.enc.shape == (3, 199, 32) and out.ctc_log_probs.shape == (3, 199, V)
    ce = torch.nn.functional.cross_entropy(out.logits.reshape(-1, V), tokens.reshape(-1))
    enc_lens = model.num_valid_frames(out.enc, lens)
    ctc = torch.nn.functional.ctc_loss(
        out.ctc_log_probs.transpose(0, 1), tokens, enc_lens, torch.full((3,), 5), blank=0, zero_infinity=True
    )
    before = {id(p): p.detach().clone() for p in model.parameters()}
    (ce + 0.3 * ctc).backward()
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in trainable_enc if p is not hf.masked_spec_embed)  # no SpecAugment here
    assert all(p.grad is not None for p in model.decoder.parameters())
    opt.step()
    assert all(torch.equal(p, before[id(p)]) for p in frozen)
    assert any(not torch.equal(p, before[id(p)]) for p in layers[-1].parameters()) == (freeze != "frozen")
    assert not torch.equal(model.out_lin.weight, before[id(model.out_lin.weight)])


def test_beam_and_greedy_search_run_on_the_ssl_model(tmp_path):
    save_tiny("wav2vec2", tmp_path)
    model = ssl_seq2seq(tmp_path, freeze="partial").eval()
    wavs, lens = _wavs(3, 4000, seed=7), torch.tensor([1.0, 0.7, 0.4])
    with torch.no_grad():
        enc = model.encode(wavs, lens)
        hyps = beam_search(model, enc, lens, beam_size=3, nbest=2, max_len=6)
        greedy = greedy_search(model, enc, lens, max_len=6)
        # the cached step equals the teacher-forced decoder on the SSL encoder's output
        seq = torch.tensor([[1, 5, 7, 9]] * 3)
        ref = torch.log_softmax(model.decode(enc, lens, seq).float(), -1)
        state = model.init_state(enc, lens)
        for t in range(seq.shape[1]):
            lp, state = model.step(seq[:, t], state)
            torch.testing.assert_close(lp, ref[:, t], atol=1e-5, rtol=1e-4)
    assert len(hyps) == 3 and all(len(h) == 2 for h in hyps)
    assert all(0 < len(h[0].tokens) <= 6 for h in hyps) and all(len(g) <= 6 for g in greedy)
    assert [h[0].tokens for h in beam_search(model, enc, lens, beam_size=1, max_len=6)] == greedy


def test_bad_sources_and_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        SSLEncoder(tmp_path / "nowhere")
    save_tiny("wav2vec2", tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        SSLEncoder(tmp_path)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="freeze must be one of"):
        SSLEncoder(tmp_path, freeze="half")
    with pytest.raises(ValueError, match="freeze_layers must be in 0..2"):
        SSLEncoder(tmp_path, freeze="partial", freeze_layers=3)
    with pytest.raises(ValueError, match="needs freeze='partial'"):
        SSLEncoder(tmp_path, freeze_layers=1)
    enc = SSLEncoder(tmp_path)
    with pytest.raises(ValueError, match="shorter than the receptive field"):
        enc(torch.randn(1, 20), torch.ones(1))
    with pytest.raises(ValueError, match="raw waveforms"):
        enc(torch.randn(1, 20, 3), torch.ones(1))


def test_yaml_builds_the_slu_model(tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    save_tiny("hubert", tmp_path / "hubert")
    text = f"""
ssl: !new:slukd.models.pretrained.SSLEncoder
    source: {tmp_path / "hubert"}
    freeze: partial
    freeze_layers: 1
model: !new:slukd.models.seq2seq.Seq2Seq
    vocab_size: {V}
    encoder: !ref <ssl>
    features: !new:slukd.models.pretrained.RawWaveform
    d_model: 32
    nhead: 2
    num_decoder_layers: 2
    d_ffn: 64
"""
    hp = load_hyperpyyaml(text)
    model = hp["model"]
    assert model.encoder is hp["ssl"] and model.encoder_dim == 32
    assert not any(p.requires_grad for p in hp["ssl"].model.encoder.layers[0].parameters())
    assert model.encode(_wavs(1, 4000), torch.ones(1)).shape == (1, 199, 32)


def test_a_hub_name_is_read_from_the_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="neither a local folder nor in the Hugging Face cache"):
        SSLEncoder("someorg/tiny-wav2vec2")  # not cached: never downloaded, a clear error
    repo = tmp_path / "hub" / "models--someorg--tiny-wav2vec2"
    save_tiny("wav2vec2", repo / "snapshots" / "0123abcd")  # the layout huggingface-cli download leaves
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    enc = SSLEncoder("someorg/tiny-wav2vec2")
    assert enc(torch.randn(2, 4000), torch.ones(2)).shape[0] == 2
