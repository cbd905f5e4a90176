"""Issue 28.3 and 28.7: teacher targets and captions do not depend on the batch an item is in, and the teacher-target
cache is keyed by the items' data (a clip replaced under the same ID is computed anew)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from slukd.captioning.data import audio_dataset
from slukd.captioning.models import build_model
from slukd.distill import Teacher
from slukd.inference import decode_waveforms
from slukd.train.decode import teacher_target_fn
from slukd.train.targets import teacher_targets

SPECS = {
    "transformer": dict(encoder="transformer", d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                        d_ffn=64, cnn_channels=[8, 8], dropout=0.0),
    "conformer": dict(encoder="conformer", d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                      d_ffn=64, cnn_channels=[8, 8], dropout=0.0),
    "cnn": dict(encoder="cnn", d_model=32, nhead=2, num_decoder_layers=1, d_ffn=64, dropout=0.0,
                cnn=dict(width=0.25, depth=0.5, max_stages=3, time_stride_stages=[0, 2], head_channels=32)),
}  # fmt: skip
#: lengths (samples) whose relative length in a padded batch rounds to another frame count than the clip alone
LENGTHS = [48123, 32777, 16005, 52000, 33333, 41111]


def _wavs(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in LENGTHS]


def _batch(wavs: list[torch.Tensor]) -> PaddedBatch:
    return PaddedBatch([{"id": f"c{i}", "sig": w} for i, w in enumerate(wavs)])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_teacher_targets_of_an_item_alone_equal_those_in_a_padded_batch(kind, precision):
    torch.manual_seed(0)
    teacher = Teacher(build_model(SPECS[kind], 40))
    compute = teacher_target_fn(teacher, beam_size=3, max_len=8, device="cpu", precision=precision, hyps=True, emb=True)
    wavs = _wavs()
    hyps_b, emb_b = compute(_batch(wavs))
    for i, w in enumerate(wavs):
        hyps_1, emb_1 = compute(_batch([w]))
        rel = float((emb_1[0] - emb_b[i]).norm() / emb_1[0].norm())
        assert rel < (1e-5 if precision == "fp32" else 1e-2), (kind, precision, i, rel)
        assert hyps_1[0] == hyps_b[i], (kind, precision, i)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_caption_does_not_depend_on_what_shares_its_batch(precision):
    """Every batch composition (alone, with shorter, with longer clips, in another order) gives the same caption."""
    torch.manual_seed(1)
    model = build_model(SPECS["transformer"], 40).eval()
    wavs = _wavs(3)
    alone = [decode_waveforms(model, [w], 3, 8, "cpu", precision, unpadded=True)[0] for w in wavs]
    assert decode_waveforms(model, wavs, 3, 8, "cpu", precision, unpadded=True) == alone
    order = [5, 2, 0, 4, 1, 3]
    assert decode_waveforms(model, [wavs[i] for i in order], 3, 8, "cpu", precision, unpadded=True) == [
        alone[i] for i in order
    ]
    for k in range(0, len(wavs), 2):
        assert decode_waveforms(model, wavs[k : k + 2], 3, 8, "cpu", precision, unpadded=True) == alone[k : k + 2]


def test_the_teacher_target_cache_is_keyed_by_the_items_data(tmp_path, monkeypatch):
    """The same IDs with one clip replaced by silence: that clip is computed anew (its old embedding is never read),
    the others come from the cache, and a fresh cache gives the same values. The recipes' in-memory audio cache is
    on (as in a run, or after any recipe test in this process): it must notice the replaced file too."""
    from slukd.data.audio import AUDIO_CACHE

    monkeypatch.setattr(AUDIO_CACHE, "max_bytes", 64 * 2**20)
    monkeypatch.setattr(AUDIO_CACHE, "store", {})
    monkeypatch.setattr(AUDIO_CACHE, "used", 0)
    torch.manual_seed(0)
    teacher = Teacher(build_model(SPECS["transformer"], 40))
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate([16000, 12000, 20000, 8000]):
        path = tmp_path / "data" / f"clip{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        rows.append({"ID": f"clip{i}", "wav": str(path), "duration": n / 16000})

    def targets(cache, batch_size=4):
        return teacher_targets(
            teacher, audio_dataset(rows, 16000, None), {r["ID"]: r["wav"] for r in rows}, cache, {"beam": 2},
            beam_size=2, max_len=6, precision="fp32", device="cpu", batch_size=batch_size, hyps=True, emb=True,
            loading=(16000, None),
        )  # fmt: skip

    ids = [r["ID"] for r in rows]
    first = targets(tmp_path / "cache")
    old = first.emb_of(ids)
    sf.write(rows[1]["wav"], np.zeros(12000, dtype=np.float32), 16000)  # the same ID, other audio
    second = targets(tmp_path / "cache")
    new = second.emb_of(ids)
    assert float((new[1] - old[1]).norm()) > 1e-3  # not the old embedding
    assert torch.equal(new[[0, 2, 3]], old[[0, 2, 3]])  # the unchanged clips: read from the cache
    assert second.entry("clip1") != first.entry("clip1") and second.entry("clip0") == first.entry("clip0")
    fresh = targets(tmp_path / "fresh", batch_size=1)  # computed one clip at a time, from scratch
    assert torch.allclose(fresh.emb_of(ids), new, rtol=1e-5, atol=1e-6)
    assert fresh.hyps_of(ids) == second.hyps_of(ids)
