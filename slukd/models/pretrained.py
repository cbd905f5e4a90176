"""Pretrained self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM) as :class:`Seq2Seq` encoders.

The SLU paper's model is a fine-tuned wav2vec2-base encoder, a transformer decoder and a CTC head. Here the encoder is
loaded through SpeechBrain's Hugging Face integration (``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2``,
which reads the folder with transformers' ``AutoConfig`` / ``AutoModel``, so the same class serves wav2vec2, HuBERT
and WavLM checkpoints, chosen by the folder's ``config.json`` ``model_type``) and wrapped as an
:class:`~slukd.models.seq2seq.AudioEncoder` that takes the raw waveform::

    model = Seq2Seq(vocab_size, encoder=SSLEncoder("pretrained/wav2vec2-base", freeze="partial"),
                    features=RawWaveform(), d_model=256, nhead=4, num_decoder_layers=6, d_ffn=2048)
    optimizer = torch.optim.AdamW(model.parameter_groups(lr=1e-3, encoder_lr=5e-5))

Nothing is downloaded: ``source`` must be a local folder holding ``config.json``, the weights (``*.safetensors``,
``*.bin`` or a SpeechBrain ``*.ckpt``) and ``preprocessor_config.json`` (as written by ``save_pretrained`` of the model
and of its ``Wav2Vec2FeatureExtractor``, or by ``huggingface-cli download``).

Lengths (relative, SpeechBrain style). For a batch wavs [B, S] with item b valid on its first ``n_b = round(r_b S)``
samples, the output has ``T' = conv_frames(S)`` frames and item b is valid on its first ``round(r_b T')`` (the
project's convention, :func:`~slukd.models.seq2seq.length_mask`):

- samples past ``n_b`` are zeroed; when the checkpoint normalises its input (``do_normalize``), each item is
  normalised over its own valid samples, ``x = (x - mean) / sqrt(var + 1e-7)`` (SpeechBrain normalises over the
  padded batch row);
- the transformer's attention mask covers exactly the first ``round(r_b T')`` frames (given to the model as a
  sample-level mask whose length maps to that many frames), and output frames past it are set to 0;
- checkpoints whose first convolution uses GroupNorm (``feat_extract_norm="group"``, e.g. wav2vec2-base, hubert-base)
  normalise that layer over time; its statistics are taken over each item's valid positions only
  (:class:`MaskedGroupNorm`, the same parameters), so padding does not leak into real frames.

Freezing (``freeze``): ``"frozen"`` (no gradient, always in eval mode, run under ``no_grad``), ``"partial"`` (the
convolutional feature extractor frozen, as SpeechBrain's ``freeze_feature_extractor``; with ``freeze_layers = N > 0``
also everything that runs before transformer layer N: feature projection, SpecAugment's mask vector, positional
convolution, the input LayerNorm of post-norm encoders, and layers 0..N-1), ``"finetune"`` (everything trained).
Frozen parts stay in eval mode when the model is put in training mode (no dropout in them; LayerDrop is decided by
the transformer as a whole, so in "partial" mode it may still skip frozen layers: set ``layerdrop=0.0`` to avoid it).

Learning rates: :meth:`Seq2Seq.parameter_groups` (or ``encoder_parameters()`` / ``other_parameters()``) gives the
trainable encoder parameters and the rest as two optimiser groups, so the encoder can have its own (smaller) rate.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from slukd.models.seq2seq import AudioEncoder, Seq2Seq, _check_lens

logger = logging.getLogger(__name__)

__all__ = [
    "FREEZE_MODES",
    "MaskedGroupNorm",
    "RawWaveform",
    "SSLEncoder",
    "check_local_folder",
    "require_transformers",
]

FREEZE_MODES = ("frozen", "partial", "finetune")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt")


def require_transformers() -> None:
    """Raise a clear ImportError when the optional ``transformers`` dependency is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "pretrained encoders/decoders need the 'transformers' package: pip install 'slukd[pretrained]'"
        ) from err


def check_local_folder(source: str | os.PathLike, what: str, need: tuple[str, ...] = ("config.json",)) -> Path:
    """``source`` as a Path after checking it is a local folder with the files ``need`` and some weights. A hub
    name (``facebook/wav2vec2-base``) is looked up in the local Hugging Face cache (``HF_HUB_CACHE``), where
    ``huggingface-cli download NAME`` puts it.

    Raises FileNotFoundError naming the folder and what is missing (nothing is ever downloaded).
    """
    path = Path(source)
    if not path.is_dir():
        path = _from_hub_cache(str(source), what)
    missing = [name for name in need if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{what}: folder {path} has no {', '.join(missing)}")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise FileNotFoundError(f"{what}: folder {path} has no weights (*.safetensors, *.bin or *.ckpt)")
    return path


def _from_hub_cache(source: str, what: str) -> Path:
    """The cached snapshot folder of hub name ``source`` (no network: the cache only)."""
    hint = ("checkpoints are never downloaded at run time; download the model once (huggingface-cli download "
            "NAME, on a machine with network) and give its hub name or its folder")  # fmt: skip
    if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", source):
        raise FileNotFoundError(f"{what}: {source!r} is not a local folder ({hint})")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except ImportError as err:
        raise FileNotFoundError(f"{what}: {source!r} is not a local folder and huggingface_hub is missing") from err
    except Exception as err:  # LocalEntryNotFoundError and friends: not in the cache
        raise FileNotFoundError(f"{what}: {source!r} is neither a local folder nor in the Hugging Face cache "
                                f"({hint})") from err  # fmt: skip


class RawWaveform(nn.Module):
    """The identity front end for encoders that take the waveform: wavs [B, S] -> wavs [B, S] (checked)."""

    def __init__(self, sample_rate: int = 16000) -> None:
        super().__init__()
        self.sample_rate = sample_rate

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        if wavs.dim() != 2:
            raise ValueError(f"RawWaveform: wavs must be [B, S], got shape {tuple(wavs.shape)}")
        _check_lens(wavs, wav_lens, "RawWaveform")
        return wavs


class MaskedGroupNorm(nn.GroupNorm):
    """Per-channel GroupNorm (groups == channels) over the first ``valid[b]`` time steps of each item.

    x [B, C, L]: ``y[b, c, t] = (x[b, c, t] - m[b, c]) / sqrt(v[b, c] + eps) * w[c] + bias[c]`` with mean m and biased
    variance v over t < valid[b] (all L when ``valid`` is None: then exactly ``nn.GroupNorm``). ``valid`` is set by
    :class:`SSLEncoder` for the duration of one forward.
    """

    valid: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.valid is None:
            return super().forward(x)
        if self.num_groups != self.num_channels or x.dim() != 3:
            raise ValueError("MaskedGroupNorm supports one group per channel on [B, C, L] inputs only")
        keep = (torch.arange(x.shape[-1], device=x.device)[None, :] < self.valid[:, None]).to(x.dtype)[:, None, :]
        n = keep.sum(dim=-1, keepdim=True).clamp(min=1.0)
        mean = (x * keep).sum(dim=-1, keepdim=True) / n
        var = (((x - mean) * keep) ** 2).sum(dim=-1, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y


class SSLEncoder(AudioEncoder):
    """A wav2vec2 / HuBERT / WavLM checkpoint from a local folder, as an encoder: wavs [B, S] -> enc [B, T', D].

    Args:
        source: local folder of the checkpoint (see the module docstring).
        freeze: "frozen" | "partial" | "finetune".
        freeze_layers: with "partial", also freeze everything before transformer layer ``freeze_layers``
            (0: the convolutional feature extractor only).
        save_path: SpeechBrain's ``save_path`` (cache folder for hub downloads; unused for local folders; default:
            ``source``).
        apply_spec_augment: the checkpoint's own SpecAugment (time/feature masking from its config) in training.
        layerdrop: override the checkpoint's LayerDrop probability (None: keep it; use 0.0 under DDP, where dropped
            layers would be unused parameters).
        normalize_wav: override the feature extractor's ``do_normalize`` (None: follow ``preprocessor_config.json``).

    ``out_dim`` is the checkpoint's hidden size (768 for the base models). The SpeechBrain lobe is ``self.lobe`` and
    the transformers model ``self.model``; ``group_norm`` the :class:`MaskedGroupNorm` of the first convolution (None
    for LayerNorm feature extractors).
    """

    group_norm: MaskedGroupNorm | None

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        freeze: str = "finetune",
        freeze_layers: int = 0,
        save_path: str | os.PathLike | None = None,
        apply_spec_augment: bool = False,
        layerdrop: float | None = None,
        normalize_wav: bool | None = None,
    ) -> None:
        super().__init__()
        require_transformers()
        if freeze not in FREEZE_MODES:
            raise ValueError(f"SSLEncoder: freeze must be one of {FREEZE_MODES}, got {freeze!r}")
        folder = check_local_folder(source, "SSLEncoder", need=("config.json", "preprocessor_config.json"))
        from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

        self.lobe = Wav2Vec2(
            str(folder),
            save_path=str(save_path if save_path is not None else folder),
            freeze=freeze == "frozen",
            freeze_feature_extractor=freeze == "partial",
            apply_spec_augment=apply_spec_augment,
        )
        self.lobe.model.float()  # checkpoints stored in half precision are trained in float32 here
        cfg = self.model.config
        if getattr(cfg, "add_adapter", False):
            raise ValueError(f"SSLEncoder: {folder}/config.json sets add_adapter=true, which is not supported")
        if layerdrop is not None:
            cfg.layerdrop = float(layerdrop)
        self.normalize_wav = bool(self.lobe.normalize_wav if normalize_wav is None else normalize_wav)
        self.out_dim = int(cfg.hidden_size)
        self.kernels = [int(k) for k in cfg.conv_kernel]
        self.strides = [int(s) for s in cfg.conv_stride]
        self.receptive_field = self._min_samples(1)
        # a plain reference (not a second registered name: state_dict keys stay those of the checkpoint)
        gn = self._install_masked_group_norm() if getattr(cfg, "feat_extract_norm", "layer") == "group" else None
        object.__setattr__(self, "group_norm", gn)
        self.mask_group_norm = True  # False: plain GroupNorm statistics over the padded row (for comparisons)
        n_layers = len(self.model.encoder.layers)
        if freeze == "partial" and not 0 <= freeze_layers <= n_layers:
            raise ValueError(f"SSLEncoder: freeze_layers must be in 0..{n_layers}, got {freeze_layers}")
        if freeze != "partial" and freeze_layers:
            raise ValueError(f"SSLEncoder: freeze_layers={freeze_layers} needs freeze='partial' (got {freeze!r})")
        self.freeze = freeze
        self.freeze_layers = int(freeze_layers)
        self._frozen = self._frozen_modules()
        for module in self._frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        spec_embed = getattr(self.model, "masked_spec_embed", None)
        if spec_embed is not None and (freeze == "frozen" or self.freeze_layers > 0):
            spec_embed.requires_grad_(False)  # SpecAugment's mask vector enters before layer 0
        self.train(self.training)

    @property
    def model(self) -> nn.Module:
        """The transformers model (Wav2Vec2Model, HubertModel or WavLMModel)."""
        return self.lobe.model

    def _install_masked_group_norm(self) -> MaskedGroupNorm:
        layer = self.model.feature_extractor.conv_layers[0]
        old = layer.layer_norm
        new = MaskedGroupNorm(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine)
        new.load_state_dict(old.state_dict())
        new.to(old.weight.device if old.affine else None)
        layer.layer_norm = new
        return new

    def _frozen_modules(self) -> list[nn.Module]:
        if self.freeze == "finetune":
            return []
        m = self.model
        if self.freeze == "frozen":
            return [m]
        mods: list[nn.Module] = [m.feature_extractor]
        if self.freeze_layers > 0:
            enc = m.encoder
            mods += [m.feature_projection, enc.pos_conv_embed]
            if not getattr(m.config, "do_stable_layer_norm", False):
                mods.append(enc.layer_norm)  # post-norm encoders normalise before layer 0
            mods += list(enc.layers[: self.freeze_layers])
        return mods

    def train(self, mode: bool = True) -> SSLEncoder:
        """Training mode everywhere except the frozen parts (which stay in eval mode: no dropout in them)."""
        super().train(mode)
        for module in getattr(self, "_frozen", []):
            module.eval()
        return self

    # -- lengths ---------------------------------------------------------------------------------------------------
    def _min_samples(self, frames: Tensor | int) -> Tensor | int:
        """Fewest samples giving ``frames`` output frames: invert ``L_out = floor((L - k) / s) + 1`` layer by layer."""
        n = frames
        for k, s in zip(reversed(self.kernels), reversed(self.strides)):
            n = (n - 1) * s + k
        return n

    def num_frames(self, num_samples: int) -> int:
        """Output frames T' for an input of ``num_samples`` samples (0 when shorter than the receptive field)."""
        n = num_samples
        for k, s in zip(self.kernels, self.strides):
            n = (n - k) // s + 1 if n >= k else 0
        return max(int(n), 0)

    def _normalize(self, wavs: Tensor, n_samples: Tensor) -> Tensor:
        """Zero samples past n_samples[b]; with normalize_wav, (x - mean) / sqrt(var + 1e-7) over the valid ones."""
        keep = (torch.arange(wavs.shape[1], device=wavs.device)[None, :] < n_samples[:, None]).to(wavs.dtype)
        x = wavs * keep
        if not self.normalize_wav:
            return x
        n = n_samples.to(wavs.dtype)[:, None]
        mean = x.sum(dim=1, keepdim=True) / n
        var = (((x - mean) * keep) ** 2).sum(dim=1, keepdim=True) / n
        return (x - mean) / torch.sqrt(var + 1e-7) * keep

    def forward(self, wavs: Tensor, rel_lens: Tensor) -> Tensor:
        """wavs [B, S] (raw waveform, 16 kHz for the usual checkpoints), rel_lens [B] -> enc [B, T', out_dim]."""
        if wavs.dim() != 2:
            raise ValueError(f"SSLEncoder expects raw waveforms [B, S], got shape {tuple(wavs.shape)}")
        _check_lens(wavs, rel_lens, "SSLEncoder")
        s = wavs.shape[1]
        t_out = self.num_frames(s)
        if t_out < 1:
            raise ValueError(f"SSLEncoder: {s} samples is shorter than the receptive field ({self.receptive_field})")
        if self.freeze == "frozen":
            with torch.no_grad():
                return self._encode(wavs, rel_lens, t_out)
        return self._encode(wavs, rel_lens, t_out)

    def _encode(self, wavs: Tensor, rel_lens: Tensor, t_out: int) -> Tensor:
        s = wavs.shape[1]
        n_samples = torch.round(rel_lens.float() * s).long().clamp(1, s)
        x = self._normalize(wavs.float(), n_samples)
        padded = bool((rel_lens < 1.0).any())
        attention_mask = None
        frames = torch.round(rel_lens.float() * t_out).long().clamp(1, t_out)
        if padded:
            mask_len = torch.clamp(self._min_samples(frames), max=s)
            attention_mask = (torch.arange(s, device=wavs.device)[None, :] < mask_len[:, None]).long()
            if self.group_norm is not None and self.mask_group_norm:
                self.group_norm.valid = torch.clamp((n_samples - self.kernels[0]) // self.strides[0] + 1, min=1)
        try:
            out = self.model(x, attention_mask=attention_mask).last_hidden_state
        finally:
            if self.group_norm is not None:
                self.group_norm.valid = None
        if out.shape[1] != t_out:  # pragma: no cover - guards the frame arithmetic above
            raise RuntimeError(f"SSLEncoder: expected {t_out} frames for {s} samples, the model gave {out.shape[1]}")
        if padded:
            keep = torch.arange(t_out, device=out.device)[None, :] < frames[:, None]
            out = out * keep.unsqueeze(-1).to(out.dtype)
        return out


def build_ssl_seq2seq(
    vocab_size: int,
    source: str | os.PathLike,
    *,
    freeze: str = "partial",
    freeze_layers: int = 0,
    d_model: int = 256,
    nhead: int = 4,
    num_decoder_layers: int = 6,
    d_ffn: int = 2048,
    dropout: float = 0.1,
    ctc: bool = True,
    sample_rate: int = 16000,
) -> Seq2Seq:
    """The SLU paper's model: a pretrained wav2vec2 / HuBERT / WavLM encoder (:class:`SSLEncoder`, raw waveform in)
    and a transformer decoder of ``num_decoder_layers`` layers (+ a CTC head). Built fresh on every call (the
    recipes call it once per task), for YAML: ``model: !name:slukd.models.pretrained.build_ssl_seq2seq {...}``."""
    encoder = SSLEncoder(source, freeze=freeze, freeze_layers=freeze_layers)
    return Seq2Seq(
        vocab_size, encoder=encoder, features=RawWaveform(sample_rate), d_model=d_model, nhead=nhead,
        num_decoder_layers=num_decoder_layers, d_ffn=d_ffn, dropout=dropout, ctc=ctc, sample_rate=sample_rate,
    )  # fmt: skip
