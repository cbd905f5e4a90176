"""Inference-only rewrites that keep a trained model's outputs (up to float rounding): :func:`optimize_for_inference`.

Applied the same way to any model (teacher or student); each rewrite acts only where its pattern occurs:

- eval mode, ``requires_grad`` off (callers run under ``torch.inference_mode``);
- batch-norm folding: a ``Conv2d`` followed by an eval-mode ``BatchNorm2d`` (inside an ``nn.Sequential``, or a pair a
  module names in ``bn_folds``) becomes one convolution with
  ``W' = W * g / sqrt(var + eps)`` (per output channel) and ``b' = (b - mean) * g / sqrt(var + eps) + beta``;
  the BatchNorm is replaced by ``nn.Identity``. A BatchNorm on a model's *input* (HTSAT's ``bn0``, per mel bin before
  a reshape) has no convolution before it and stays;
- in-place activations: ``nn.SiLU`` / ``nn.ReLU`` / ``nn.Hardswish`` with ``inplace=True`` (no new activation tensor);
- channels_last memory format for every 4-D convolution weight.

``torch.compile`` is not part of it: measured on the 2-core CPU VM it made the EfficientNet-B2 student's encoder
slower (333 vs 142 ms per clip at batch 8, inductor with freezing) after an 8-minute compile
(docs/deploy_captioning.md).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_batchnorm", "optimize_for_inference"]


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


def optimize_for_inference(model: nn.Module, *, fold_bn: bool = True, inplace_act: bool = True) -> dict[str, int]:
    """Rewrite ``model`` in place for inference (see the module docstring); returns what was done, as counts:
    ``{"bn_folded": n, "inplace_activations": n, "channels_last_convs": n}``. Training it afterwards is wrong
    (folded BatchNorms no longer normalise), so the model is left in eval mode with gradients off."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    done = {"bn_folded": 0, "inplace_activations": 0, "channels_last_convs": 0}
    if fold_bn:
        seen: set[int] = set()
        for conv, bn, owner, name in _fold_pairs(model):
            if id(bn) in seen or not bn.track_running_stats:
                continue
            seen.add(id(bn))
            fold_batchnorm(conv, bn)
            setattr(owner, name, nn.Identity())
            done["bn_folded"] += 1
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
