"""ONNX export of a captioning student (encoder + key/value-cached decoder), and its onnxruntime runner.

    python -m slukd.export.onnx_student RUN_DIR OUT_DIR [--int8]    # a finished captioning run -> ONNX folder
    slukd caption RUN_DIR a.wav --onnx OUT_DIR [--int8]               # caption with it (onnxruntime, CPU)

Needs the ``deploy`` extra (``pip install onnx onnxruntime``). The folder holds three graphs and a manifest; they
run in any ONNX runtime (nothing of this package inside), and :class:`OnnxStudent` drives them with slukd's batched
beam search (``slukd.models.decoding``), so the hypotheses are those of the PyTorch model up to float rounding:

- ``encoder.onnx``: ``wavs`` [B, S] float32 16 kHz, ``wav_lens`` [B] relative lengths in (0, 1] -> ``enc``
  [B, T', D] (log-mel front end + CNN encoder, as :meth:`Seq2Seq.encode`; padded frames are 0);
- ``init.onnx``: ``enc`` [B, T', D] -> ``cross_k``, ``cross_v`` [L, B, H, T', dh] (the encoder keys/values of every
  decoder layer, computed once per clip: ``K = (enc W_p + b_p) W_k + b_k`` with W_p the encoder projection);
- ``step.onnx``: one decoding step for N = B * G rows (G hypotheses per clip, consecutive): ``tokens`` [N] int64 (the
  last token of each row), ``step`` [1] int64 (its position t), ``self_k``, ``self_v`` [L, N, H, t, dh] (keys/values
  of the t earlier tokens; t = 0 at the first step), ``cross_k``, ``cross_v`` [L, B, H, T', dh], ``cross_keep``
  [B, 1, 1, T'] bool (valid encoder frames) -> ``log_probs`` [N, V] float32, ``new_self_k``, ``new_self_v``
  [L, N, H, t + 1, dh]. Beam reordering is a gather of rows of ``self_k`` / ``self_v`` (axis 1).
- ``student.json``: vocabulary size, bos/eos/pad ids, d_model, heads, layers, sample rate, file names.

``--int8`` also writes ``step.int8.onnx``: onnxruntime's dynamic int8 quantisation of the decoding step's matrix
products (``MatMul``/``Gemm``; weights int8 per channel, activations quantised per call), used with ``int8=True``
(the encoder and the encoder keys/values stay float32; ``quantize_folder(dir, GRAPHS)`` quantises all graphs).
Encoder keys/values are computed in float32 inside the graphs; sinusoid positions are a table of
``max_positions`` rows (the decoding length limit of the export).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slukd.models.seq2seq import DecoderState, Seq2Seq, length_mask

logger = logging.getLogger(__name__)

__all__ = [
    "DFTSTFT",
    "GRAPHS",
    "INT8_GRAPHS",
    "OnnxStudent",
    "export_student",
    "export_run",
    "quantize_folder",
    "require_onnxruntime",
]

FORMAT_VERSION = 1
GRAPHS = ("encoder", "init", "step")
INT8_GRAPHS = ("step",)  # quantised by default (quantize_folder)
OPSET = 17


def require_onnxruntime() -> Any:
    """The onnxruntime module, or an ImportError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export/inference needs onnxruntime: pip install 'slukd[deploy]'") from err
    return onnxruntime


# ----------------------------------------------------------------------------------------------------------------------
# The graphs (thin modules around the trained Seq2Seq, traced by torch.onnx.export)
# ----------------------------------------------------------------------------------------------------------------------
class DFTSTFT(nn.Module):
    """SpeechBrain's ``STFT`` (``torch.stft``, onesided) as a strided ``conv1d`` with a windowed DFT basis, so that it
    exports to ONNX (whose exporter rejects complex STFT outputs). x [B, S] -> [B, T, n_fft // 2 + 1, 2] (real, imag):

        X[t, k] = sum_n x_pad[t * hop + n] w[n] exp(-2 pi i k n / n_fft),  T = 1 + S // hop (centred: n_fft // 2 of
        ``pad_mode`` padding on each side); the window (win_length samples) is zero-padded to n_fft, centred.
    """

    def __init__(self, stft: nn.Module) -> None:
        super().__init__()
        if not getattr(stft, "onesided", True) or getattr(stft, "normalized_stft", False):
            raise ValueError("DFTSTFT: only onesided, unnormalised STFTs are supported")
        self.n_fft, self.hop, self.center, self.pad_mode = stft.n_fft, stft.hop_length, stft.center, stft.pad_mode
        win = stft.window.double()
        left = (self.n_fft - win.numel()) // 2
        win = F.pad(win, (left, self.n_fft - win.numel() - left))
        n = torch.arange(self.n_fft, dtype=torch.float64)
        k = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)
        ang = 2 * math.pi * k[:, None] * n[None, :] / self.n_fft
        basis = torch.cat([torch.cos(ang), -torch.sin(ang)]) * win[None, :]  # [2K, n_fft]
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.center:
            x = F.pad(x[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        else:
            x = x[:, None, :]
        y = F.conv1d(x, self.basis, stride=self.hop)  # [B, 2K, T]
        k = self.basis.shape[0] // 2
        return torch.stack([y[:, :k], y[:, k:]], dim=-1).transpose(1, 2)  # [B, T, K, 2]


class _Encoder(nn.Module):
    """wavs, wav_lens -> enc, with the front end's STFT as :class:`DFTSTFT` (the rest unchanged)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        fbank = getattr(model.features, "fbank", None)
        self.stft = DFTSTFT(fbank.compute_STFT) if fbank is not None and hasattr(fbank, "compute_STFT") else None

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        if self.stft is None:
            return self.model.encoder(self.model.features(wavs, wav_lens), wav_lens)
        fbank = self.model.features.fbank
        original = fbank.compute_STFT
        fbank.compute_STFT = self.stft
        try:
            feats = self.model.features(wavs, wav_lens)
        finally:
            fbank.compute_STFT = original
        return self.model.encoder(feats, wav_lens)


class _Init(nn.Module):
    """enc [B, T', D] -> cross_k, cross_v [L, B, H, T', dh] (as :meth:`Seq2Seq.init_state`)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, enc: Tensor) -> tuple[Tensor, Tensor]:
        m, e = self.model, self.model.d_model
        mem = m.enc_proj(enc)
        ks, vs = [], []
        for layer in m.decoder.layers:
            mha = layer.multihead_attn.att
            w, b = mha.in_proj_weight, mha.in_proj_bias
            ks.append(m._split_heads(F.linear(mem, w[e : 2 * e], None if b is None else b[e : 2 * e])))
            vs.append(m._split_heads(F.linear(mem, w[2 * e :], None if b is None else b[2 * e :])))
        return torch.stack(ks), torch.stack(vs)


def _attend(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(dh) [masked where not keep]) v, written out (exports to plain MatMul/Softmax)."""
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


class _Step(nn.Module):
    """One decoding step on stacked caches (see the module docstring); the arithmetic of :meth:`Seq2Seq.step`."""

    def __init__(self, model: Seq2Seq, max_positions: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("pe", model.positional_encoding.pe[0, :max_positions].detach().clone(), persistent=False)

    def forward(
        self,
        tokens: Tensor,
        step: Tensor,
        self_k: Tensor,
        self_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_keep: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        e, h = m.d_model, m.nhead
        n, b = tokens.shape[0], cross_k.shape[1]
        x = m.tgt_embedding(tokens.view(n, 1)).view(n, e) + self.pe.index_select(0, step.view(1))
        new_k, new_v = [], []
        for i, layer in enumerate(m.decoder.layers):
            sa = layer.self_attn.att
            qkv = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias)
            q, k, v = (t.reshape(n, h, 1, e // h) for t in qkv.split(e, dim=-1))  # [N, H, 1, dh]
            k_all = torch.cat([self_k[i], k], dim=2)
            v_all = torch.cat([self_v[i], v], dim=2)
            new_k.append(k_all)
            new_v.append(v_all)
            x = x + sa.out_proj(_attend(q, k_all, v_all).reshape(n, e))
            ca = layer.multihead_attn.att
            bq = None if ca.in_proj_bias is None else ca.in_proj_bias[:e]
            q = F.linear(layer.norm2(x), ca.in_proj_weight[:e], bq)
            q = q.reshape(b, -1, h, e // h).transpose(1, 2)  # [B, H, G, dh]: a clip's rows share its keys/values
            a = _attend(q, cross_k[i], cross_v[i], cross_keep)
            x = x + ca.out_proj(a.transpose(1, 2).reshape(n, e))
            x = x + layer.pos_ffn.ffn(layer.norm3(x))
        logits = m.out_lin(m.decoder.norm(x))
        return torch.log_softmax(logits, dim=-1), torch.stack(new_k), torch.stack(new_v)


def _example(model: Seq2Seq, sample_rate: int) -> tuple[Tensor, Tensor]:
    """Two clips of 1.0 and 0.6 s: a padded item, so the traced encoder keeps its masking path."""
    g = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(2, sample_rate, generator=g)
    return wavs, torch.tensor([1.0, 0.6])


def export_student(
    model: Seq2Seq,
    out_dir: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    max_positions: int = 256,
    int8: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``encoder.onnx``, ``init.onnx``, ``step.onnx`` and ``student.json`` for ``model`` (a :class:`Seq2Seq`)
    to ``out_dir``; with ``int8`` also the quantised ``*.int8.onnx`` (:func:`quantize_folder`). ``extra`` is stored
    in the manifest (e.g. the run's decoding settings). ``max_positions`` bounds the decoded length."""
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"export_student: expected a slukd Seq2Seq model, got {type(model).__name__}")
    if max_positions > model.positional_encoding.pe.shape[1]:
        raise ValueError(
            f"export_student: max_positions {max_positions} > the model's {model.positional_encoding.pe.shape[1]}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    wavs, lens = _example(model, sample_rate)
    n_layers = len(model.decoder.layers)
    h, dh = model.nhead, model.d_model // model.nhead
    with torch.no_grad():
        enc = model.encode(wavs, lens)
        _onnx_export(
            _Encoder(model), (wavs, lens), out / "encoder.onnx", ["wavs", "wav_lens"], ["enc"],
            {"wavs": {0: "B", 1: "S"}, "wav_lens": {0: "B"}, "enc": {0: "B", 1: "T"}},
        )  # fmt: skip
        _onnx_export(
            _Init(model), (enc,), out / "init.onnx", ["enc"], ["cross_k", "cross_v"],
            {"enc": {0: "B", 1: "T"}, "cross_k": {1: "B", 3: "T"}, "cross_v": {1: "B", 3: "T"}},
        )  # fmt: skip
        group, t = 2, 3
        n = enc.shape[0] * group
        ck, cv = _Init(model)(enc)
        keep = length_mask(lens, enc.shape[1])
        keep[:, 0] = True
        args = (
            torch.full((n,), model.bos_index, dtype=torch.long),
            torch.tensor([t]),
            torch.randn(n_layers, n, h, t, dh),
            torch.randn(n_layers, n, h, t, dh),
            ck,
            cv,
            keep[:, None, None, :],
        )
        names = ["tokens", "step", "self_k", "self_v", "cross_k", "cross_v", "cross_keep"]
        axes = {
            "tokens": {0: "N"},
            "self_k": {1: "N", 3: "t"},
            "self_v": {1: "N", 3: "t"},
            "cross_k": {1: "B", 3: "T"},
            "cross_v": {1: "B", 3: "T"},
            "cross_keep": {0: "B", 3: "T"},
            "log_probs": {0: "N"},
            "new_self_k": {1: "N", 3: "t1"},
            "new_self_v": {1: "N", 3: "t1"},
        }
        _onnx_export(_Step(model, max_positions), args, out / "step.onnx", names,
                     ["log_probs", "new_self_k", "new_self_v"], axes)  # fmt: skip
    manifest = _manifest(model, sample_rate, max_positions, extra)
    (out / "student.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if int8:
        quantize_folder(out)
    return out


def _manifest(model: Seq2Seq, sample_rate: int, max_positions: int, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The contents of ``student.json`` (see the module docstring)."""
    return {
        "format": "slukd-onnx-student",
        "version": FORMAT_VERSION,
        "vocab_size": int(model.vocab_size),
        "bos_index": int(model.bos_index),
        "eos_index": int(model.eos_index),
        "pad_index": int(model.pad_index),
        "d_model": int(model.d_model),
        "nhead": int(model.nhead),
        "num_layers": len(model.decoder.layers),
        "encoder_dim": int(model.encoder_dim),
        "sample_rate": int(sample_rate),
        "max_positions": int(max_positions),
        "graphs": {g: f"{g}.onnx" for g in GRAPHS},
        **(extra or {}),
    }


def _onnx_export(module: nn.Module, args: tuple, path: Path, inputs: list, outputs: list, axes: dict) -> None:
    """torch.onnx's TorchScript-based exporter (no onnxscript needed), opset 17, constants folded."""
    import warnings

    module.eval()  # the wrappers are new modules (training=True): BatchNorm would export with batch statistics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values (shape checks) in the model
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip


def quantize_folder(folder: str | os.PathLike, graphs: tuple[str, ...] = INT8_GRAPHS) -> list[Path]:
    """Dynamic int8 quantisation of the folder's ``graphs`` (onnxruntime.quantization.quantize_dynamic on
    MatMul/Gemm, per-channel int8 weights): writes ``<graph>.int8.onnx`` next to each; returns their paths.

    Default: the decoding step only (``step``: the decoder's projections, FFNs and output layer, run at every step).
    On the demo student (docs/deploy_captioning.md) that cost 0.60 CIDEr-D points (60.15 -> 59.55, 6 of 200
    captions changed); quantising the encoder keys/values (``init``) too cost 1.05, the encoder's pointwise
    convolutions nothing more; ``graphs=GRAPHS`` quantises all three."""
    require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(folder)
    unknown = sorted(set(graphs) - set(GRAPHS))
    if unknown or not graphs:
        raise ValueError(f"quantize_folder: graphs must be some of {GRAPHS}, got {graphs}")
    written = []
    for g in GRAPHS:
        dst = folder / f"{g}.int8.onnx"
        if g not in graphs:
            dst.unlink(missing_ok=True)  # a stale quantised graph of an earlier call would be picked up
            continue
        src = folder / f"{g}.onnx"
        if not src.is_file():
            raise FileNotFoundError(f"quantize_folder: no {src}")
        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, weight_type=QuantType.QInt8
        )
        written.append(dst)
    return written


# ----------------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------------
class OnnxStudent:
    """An exported student on onnxruntime (CPU), with the decoder interface of :class:`Seq2Seq` that
    ``slukd.models.decoding`` uses (``encode``, ``init_state``, ``step``, ``reorder_state``, ``num_valid_frames``):
    ``beam_search(OnnxStudent(dir), ...)`` decodes as the PyTorch model does.

    Args:
        folder: an :func:`export_student` folder.
        int8: use the ``*.int8.onnx`` graphs where there are (:func:`quantize_folder`), the float32 ones elsewhere.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    training = False

    def __init__(self, folder: str | os.PathLike, int8: bool = False, threads: int | None = None) -> None:
        ort = require_onnxruntime()
        self.folder = Path(folder)
        path = self.folder / "student.json"
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read the export manifest: {err}") from err
        if self.manifest.get("format") != "slukd-onnx-student":
            raise ValueError(f"{path}: field 'format' is {self.manifest.get('format')!r}, not 'slukd-onnx-student'")
        if self.manifest.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: field 'version' is {self.manifest.get('version')!r}; this slukd reads {FORMAT_VERSION}"
            )
        for key in ("vocab_size", "bos_index", "eos_index", "sample_rate", "max_positions"):
            if not isinstance(self.manifest.get(key), int):
                raise ValueError(f"{path}: field {key!r} is missing or not an integer")
        self.vocab_size = self.manifest["vocab_size"]
        self.bos_index, self.eos_index = self.manifest["bos_index"], self.manifest["eos_index"]
        self.pad_index = self.manifest.get("pad_index", 0)
        self.sample_rate = self.manifest["sample_rate"]
        self.max_positions = self.manifest["max_positions"]
        self.int8 = bool(int8)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sessions = {}
        if int8 and not any((self.folder / f"{g}.int8.onnx").is_file() for g in GRAPHS):
            raise FileNotFoundError(f"{self.folder}: no *.int8.onnx (run quantize_folder or export with --int8)")
        self.graph_files = {}
        for g in GRAPHS:
            f = self.folder / f"{g}.int8.onnx"
            if not (int8 and f.is_file()):  # int8: the quantised graph where there is one
                f = self.folder / f"{g}.onnx"
            if not f.is_file():
                raise FileNotFoundError(f"{self.folder}: no {f.name}")
            self.graph_files[g] = f.name
            self.sessions[g] = ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])

    # the module-like surface the decoders and slukd.inference touch
    def eval(self) -> OnnxStudent:
        return self

    def train(self, mode: bool = True) -> OnnxStudent:
        if mode:
            raise RuntimeError("OnnxStudent is inference-only")
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxStudent:
        return self

    def parameters(self):  # noqa: ANN201 - an empty iterator, as a module without parameters
        return iter(())

    def _run(self, graph: str, feeds: dict[str, Tensor]) -> list[Tensor]:
        out = self.sessions[graph].run(None, {k: v.detach().cpu().contiguous().numpy() for k, v in feeds.items()})
        return [torch.from_numpy(o) for o in out]

    def encode(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """wavs [B, S] float32 at ``sample_rate``, wav_lens [B] relative -> enc [B, T', D]."""
        if wavs.dim() != 2 or wav_lens.shape != (wavs.shape[0],):
            raise ValueError(f"OnnxStudent.encode: wavs [B, S] and wav_lens [B], got {tuple(wavs.shape)}, "
                             f"{tuple(wav_lens.shape)}")  # fmt: skip
        return self._run("encoder", {"wavs": wavs.float(), "wav_lens": wav_lens.float()})[0]

    def num_valid_frames(self, enc: Tensor, wav_lens: Tensor) -> Tensor:
        """round(T' * wav_lens), as :meth:`Seq2Seq.num_valid_frames`."""
        return torch.round(enc.shape[1] * wav_lens.float()).long()

    def init_state(self, enc: Tensor, wav_lens: Tensor, group: int = 1) -> DecoderState:
        """Encoder keys/values once per clip; ``self_k``/``self_v`` hold one stacked [L, N, H, t, dh] tensor each."""
        ck, cv = self._run("init", {"enc": enc.float()})
        keep = length_mask(wav_lens.cpu(), enc.shape[1])
        keep[:, 0] = True
        layers, b, h, _, dh = ck.shape
        empty = torch.zeros(layers, b * group, h, 0, dh)
        return DecoderState([empty], [empty], [ck], [cv], keep[:, None, None, :], group, 0)

    def step(self, tokens_last: Tensor, state: DecoderState, temperature: float = 1.0) -> tuple[Tensor, DecoderState]:
        """tokens_last [N] -> log-probs [N, V] float32 and the new state (as :meth:`Seq2Seq.step`)."""
        if state.step >= self.max_positions:
            raise ValueError(f"OnnxStudent: step {state.step} beyond the export's max_positions {self.max_positions}")
        if tokens_last.shape[0] != state.num_rows:
            raise ValueError(f"step: got {tokens_last.shape[0]} tokens for a state of {state.num_rows} rows")
        feeds = {
            "tokens": tokens_last.long(),
            "step": torch.tensor([state.step]),
            "self_k": state.self_k[0],
            "self_v": state.self_v[0],
            "cross_k": state.cross_k[0],
            "cross_v": state.cross_v[0],
            "cross_keep": state.cross_keep,
        }
        log_probs, k, v = self._run("step", feeds)
        if temperature != 1.0:
            log_probs = torch.log_softmax(log_probs / temperature, dim=-1)
        new = DecoderState([k], [v], state.cross_k, state.cross_v, state.cross_keep, state.group, state.step + 1)
        return log_probs, new

    def reorder_state(self, state: DecoderState, index: Tensor, same_items: bool = False) -> DecoderState:
        """New row r = old row index[r] (see :meth:`Seq2Seq.reorder_state`); the caches are gathered on axis 1."""
        g = state.group
        index = index.cpu()
        k, v = state.self_k[0].index_select(1, index), state.self_v[0].index_select(1, index)
        if same_items:
            return DecoderState([k], [v], state.cross_k, state.cross_v, state.cross_keep, g, state.step)
        if index.numel() % g:
            raise ValueError(f"reorder_state: {index.numel()} rows is not a multiple of the group size {g}")
        items = torch.div(index.view(-1, g)[:, 0], g, rounding_mode="floor")
        ck, cv = state.cross_k[0].index_select(1, items), state.cross_v[0].index_select(1, items)
        return DecoderState([k], [v], [ck], [cv], state.cross_keep.index_select(0, items), g, state.step)


# ----------------------------------------------------------------------------------------------------------------------
# A finished captioning run -> ONNX folder
# ----------------------------------------------------------------------------------------------------------------------
def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, int8: bool = False) -> Path:
    """Export the model of a finished captioning run (``model.yaml`` + ``model.ckpt``) with its decoding settings
    (``test_beam_size``, ``max_decode_len``) in the manifest, and a copy of its ``vocab.json``."""
    import shutil

    from slukd.utils.model_io import load_model, read_model_spec

    run = Path(run_dir)
    for name in ("model.yaml", "model.ckpt", "vocab.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"export_run: {run} has no {name} (a finished captioning run has)")
    spec = read_model_spec(run)
    model = load_model(run, run / "model.ckpt", device="cpu")
    sr = int(spec.get("sample_rate", 16000))
    extra = {k: spec[k] for k in ("test_beam_size", "max_decode_len") if k in spec}
    max_positions = max(64, int(spec.get("max_decode_len", 64)) + 2)
    out = export_student(model, out_dir, sample_rate=sr, max_positions=max_positions, int8=int8, extra=extra)
    shutil.copyfile(run / "vocab.json", out / "vocab.json")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m slukd.export.onnx_student RUN_DIR OUT_DIR [--int8]``; 0 on success, 2 with a one-line error."""
    p = argparse.ArgumentParser(prog="python -m slukd.export.onnx_student", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a finished captioning run (model.yaml, model.ckpt, vocab.json)")
    p.add_argument("out_dir", help="the ONNX folder to write")
    p.add_argument("--int8", action="store_true", help="also write the dynamically int8-quantised graphs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = export_run(args.run_dir, args.out_dir, int8=args.int8)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {out}: " + ", ".join(sorted(f.name for f in out.iterdir())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def use_onnx(captioner: Any, folder: str | os.PathLike, int8: bool = False) -> Any:
    """Make a :class:`slukd.inference.Captioner` decode with the ONNX export in ``folder`` (CPU, onnxruntime):
    its model becomes an :class:`OnnxStudent`; the export must match the run's vocabulary and sample rate."""
    onnx_model = OnnxStudent(folder, int8=int8, threads=torch.get_num_threads())
    where = Path(folder) / "student.json"
    if onnx_model.vocab_size != captioner.vocab.vocab_size:
        raise ValueError(
            f"{where}: vocab_size {onnx_model.vocab_size}, but the run's vocabulary has {captioner.vocab.vocab_size} "
            "words (export this run: python -m slukd.export.onnx_student)"
        )
    if onnx_model.sample_rate != captioner.sample_rate:
        raise ValueError(f"{where}: sample_rate {onnx_model.sample_rate}, the run's is {captioner.sample_rate}")
    if onnx_model.max_positions < captioner.max_decode_len + 1:
        raise ValueError(f"{where}: max_positions {onnx_model.max_positions} < the run's max_decode_len + 1")
    captioner.model, captioner.device, captioner.precision = onnx_model, "cpu", "fp32"
    return captioner
