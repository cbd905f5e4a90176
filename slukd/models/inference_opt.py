"""Inference-only rewrites that keep a trained model's outputs (up to float rounding): :func:`optimize_for_inference`.

Applied the same way to any model (teacher or student); each rewrite acts only where its pattern occurs:

- eval mode, ``requires_grad`` off (callers run under ``torch.inference_mode``);
- batch-norm folding: a ``Conv2d`` followed by an eval-mode ``BatchNorm2d`` (inside an ``nn.Sequential``, or a pair a
  module names in ``bn_folds``) becomes one convolution with
  ``W' = W * g / sqrt(var + eps)`` (per output channel) and ``b' = (b - mean) * g / sqrt(var + eps) + beta``;
  the BatchNorm is replaced by ``nn.Identity``. A BatchNorm on a model's *input* (HTSAT's ``bn0``, per mel bin before
  a reshape) has no convolution before it and stays;
- convolution / linear + activation fusion (CPU, oneDNN post-ops: ``torch.ops.mkldnn._convolution_pointwise`` /
  ``_linear_pointwise``): ``act(conv(x) + b)`` and ``act(x W^T + b)`` in one kernel instead of a second pass over the
  output, for SiLU / ReLU / GELU directly after a ``Conv2d`` or ``Linear`` (in an ``nn.Sequential``, a pair a module
  names in ``act_fusions``, and the feed-forward ``fc1`` + activation of transformers' BART layers and ``dense`` +
  activation of CLAP's HTSAT blocks). The student's MBConv blocks and decoder FFNs and the teacher's Swin MLPs and
  BART FFNs all get it; skipped on CUDA and where oneDNN is missing;
- in-place activations: ``nn.SiLU`` / ``nn.ReLU`` / ``nn.Hardswish`` with ``inplace=True`` (no new activation tensor);
- channels_last memory format for every 4-D convolution weight.

``torch.compile`` is not part of it: measured on the 2-core CPU VM it made the EfficientNet-B2 student's encoder
slower (333 vs 142 ms per clip at batch 8, inductor with freezing) after an 8-minute compile
(docs/deploy_captioning.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FusedConvAct", "FusedLinearAct", "fold_batchnorm", "optimize_for_inference"]

# transformers' feed-forward (linear, activation) attribute pairs, by module class name
_HF_ACT_PAIRS = {
    "ClapAudioIntermediate": ("dense", "intermediate_act_fn"),
    "BartEncoderLayer": ("fc1", "activation_fn"),
    "BartDecoderLayer": ("fc1", "activation_fn"),
}


def _act_attr(act: nn.Module) -> tuple[str, str] | None:
    """(oneDNN post-op, GELU algorithm) for an activation module, None when it is not fusable."""
    if isinstance(act, nn.SiLU):
        return "swish", ""
    if isinstance(act, nn.ReLU):
        return "relu", ""
    if isinstance(act, nn.GELU):
        return "gelu", "tanh" if act.approximate == "tanh" else "none"
    if type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is torch.nn.functional.gelu:
        return "gelu", "none"  # transformers' exact (erf) GELU
    return None


def _fusion_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConvAct(nn.Module):
    """``act(conv2d(x, W, b))`` as one oneDNN kernel (CPU); falls back to the two ops on other devices."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        attr = _act_attr(act)
        if attr is None or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"FusedConvAct: cannot fuse {conv} with {act}")
        self.attr, self.algorithm = attr
        self.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last), False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.act = act
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, self.attr, [],
                self.algorithm or None,
            )  # fmt: skip
        y = torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self.act(y)


class FusedLinearAct(nn.Module):
    """``act(x W^T + b)`` as one oneDNN kernel (CPU, float32); falls back to the two ops elsewhere."""

    def __init__(self, linear: nn.Linear, act: nn.Module) -> None:
        super().__init__()
        attr = _act_attr(act)
        if attr is None:
            raise ValueError(f"FusedLinearAct: cannot fuse {linear} with {act}")
        self.attr, self.algorithm = attr
        self.weight = nn.Parameter(linear.weight.detach(), False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), False)
        self.act = act
        self.in_features, self.out_features = linear.in_features, linear.out_features

    #: fewer rows than this run as the two ops: oneDNN's fused call costs more than it saves on a few rows
    #: (measured on the 2-core VM, 256 -> 1024 + GELU: 115 vs 49 us at 3 rows, 864 vs 841 us at 192,
    #: 8.6 vs 14.8 ms at 2000), e.g. a beam-search step's few hypotheses
    min_rows = 256

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and x.numel() >= self.min_rows * self.in_features
        ):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [], self.algorithm or None)
        return self.act(torch.nn.functional.linear(x, self.weight, self.bias))


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode ``bn`` that follows ``conv`` into ``conv`` in place (conv gets a bias if it had none).

    ``W'[o] = W[o] * s[o]``, ``b'[o] = (b[o] - mean[o]) * s[o] + beta[o]`` with ``s = gamma / sqrt(var + eps)``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_batchnorm: the BatchNorm tracks no running statistics")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"fold_batchnorm: conv has {conv.out_channels} channels, BatchNorm {bn.num_features}")
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.float()
    shift = -bn.running_mean.float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.float()
    w = conv.weight
    new_w = (w.float() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
    bias = conv.bias.float() * scale + shift if conv.bias is not None else shift
    conv.weight = nn.Parameter(new_w, requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _fold_pairs(module: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, object, str]]:
    """(conv, bn, owner, bn attribute name) pairs to fold: consecutive entries of an ``nn.Sequential``, and the
    pairs a module declares as ``bn_folds = [("conv attr", "bn owner attr", "bn index or attr"), ...]``."""
    pairs = []
    for m in module.modules():
        if isinstance(m, nn.Sequential):
            items = list(m._modules.items())
            for (_, a), (name, b) in zip(items, items[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs.append((a, b, m, name))
        for conv_name, owner_name, bn_name in getattr(m, "bn_folds", ()):
            conv, owner = getattr(m, conv_name, None), getattr(m, owner_name, None)
            bn = getattr(owner, bn_name, None) if owner is not None else None
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((conv, bn, owner, bn_name))
    return pairs


def _act_pairs(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(owner of the conv/linear, its name, owner of the activation, its name) for every fusable pair."""
    pairs = []
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            items = list(m._modules.items())
            for i, (name, a) in enumerate(items):
                if not isinstance(a, (nn.Conv2d, nn.Linear)):
                    continue
                j = i + 1
                while j < len(items) and isinstance(items[j][1], nn.Identity):
                    j += 1
                if j < len(items) and _act_attr(items[j][1]) is not None:
                    pairs.append((m, name, m, items[j][0]))
        declared = list(getattr(m, "act_fusions", ()))
        if type(m).__name__ in _HF_ACT_PAIRS:
            lin, act = _HF_ACT_PAIRS[type(m).__name__]
            declared.append((lin, None, act))
        for lin_name, owner_name, act_name in declared:
            owner = m if owner_name is None else getattr(m, owner_name, None)
            if owner is not None and hasattr(m, lin_name) and hasattr(owner, act_name):
                pairs.append((m, lin_name, owner, act_name))
    return pairs


def optimize_for_inference(
    model: nn.Module, *, fold_bn: bool = True, fuse_act: bool = True, inplace_act: bool = True
) -> dict[str, int]:
    """Rewrite ``model`` in place for inference (see the module docstring); returns what was done, as counts:
    ``{"bn_folded": n, "act_fused": n, "inplace_activations": n, "channels_last_convs": n}``. Training it afterwards
    is wrong (folded BatchNorms no longer normalise), so the model is left in eval mode with gradients off."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    done = {"bn_folded": 0, "act_fused": 0, "inplace_activations": 0, "channels_last_convs": 0}
    if fold_bn:
        seen: set[int] = set()
        for conv, bn, owner, name in _fold_pairs(model):
            if id(bn) in seen or not bn.track_running_stats:
                continue
            seen.add(id(bn))
            fold_batchnorm(conv, bn)
            setattr(owner, name, nn.Identity())
            done["bn_folded"] += 1
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if fuse_act and on_cpu and _fusion_available():
        for owner, name, act_owner, act_name in _act_pairs(model):
            lin, act = getattr(owner, name), getattr(act_owner, act_name)
            if isinstance(lin, nn.Conv2d) and not isinstance(lin.padding, str) and lin.padding_mode == "zeros":
                fused: nn.Module = FusedConvAct(lin, act)
            elif isinstance(lin, nn.Linear) and type(lin) is nn.Linear:
                fused = FusedLinearAct(lin, act)
            else:
                continue
            setattr(owner, name, fused)
            setattr(act_owner, act_name, nn.Identity())
            done["act_fused"] += 1
    if inplace_act:
        for m in model.modules():
            if isinstance(m, (nn.SiLU, nn.ReLU, nn.Hardswish)) and not m.inplace:
                m.inplace = True
                done["inplace_activations"] += 1
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
            done["channels_last_convs"] += 1
    return done
