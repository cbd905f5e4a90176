"""A CNN audio encoder in the spirit of EfficientNet (MBConv blocks with squeeze-excitation), for the student.

feats [B, T, F] -> stem Conv3x3 (stride s_t0 x 2) -> MBConv stages -> Conv1x1 head -> mean over frequency
-> (optional Linear) -> enc [B, T', out_dim], with T' = T / prod(time strides) (ceil at each stride).

MBConv(c_in -> c_out, expand e, kernel k, stride (s_t, s_f)):
    h = SiLU(BN(Conv1x1(x)))                         (c_in -> e * c_in; skipped when e == 1)
    h = SiLU(BN(DepthwiseConv_kxk(h, stride)))
    h = h * sigmoid(W2 SiLU(W1 masked_mean_{t,f}(h)))  (squeeze-excitation over the valid frames)
    y = BN(Conv1x1(h)) (+ x when stride 1 and c_in == c_out)

The stage table is EfficientNet-B0's (channels 16, 24, 40, 80, 112, 192, 320; head 1280), scaled by ``width``
(channels, rounded to multiples of 8) and ``depth`` (repeats, rounded up): width 1.1 / depth 1.2 is B2's scaling
(about 7.7M parameters without a classifier). Frequency is downsampled by 2 at every strided stage, time only at the
stages listed in ``time_stride_stages`` (so the frame rate stays useful for a decoder).

Padding: padded frames (beyond ``round(rel_len * T)`` at each resolution) are zeroed before every convolution and
excluded from the squeeze-excitation means and the final output, so in eval mode they do not change valid frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slukd.models.seq2seq import AudioEncoder, length_mask

# EfficientNet-B0 stages: (expand ratio, kernel, stride, output channels, repeats)
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _round_channels(c: float, divisor: int = 8) -> int:
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


def _time_mask(rel_lens: Tensor, t: int) -> Tensor:
    """[B, 1, T, 1] float mask of the valid frames."""
    return length_mask(rel_lens, t)[:, None, :, None].float()


def _pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 convolution as one matrix product over channels: [B, C, T, F] -> [B, C', T, F] (channels-last memory).

    Same weights and result as ``conv(x)``; CPU 1x1 convolutions otherwise take a slow im2col path. A fused
    convolution + activation of :func:`slukd.models.inference_opt.optimize_for_inference` is called as it is.
    """
    if not isinstance(conv, nn.Conv2d):
        return conv(x)
    y = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)  # [B, T, F, C']
    return y.permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    """x [B, C, T, F] * sigmoid(W2 SiLU(W1 mean_valid(x))) with the mean over valid (t, f) positions."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:  # every frame is valid
            s = x.mean(dim=(2, 3), keepdim=True)
        else:
            denom = (mask.sum(dim=(2, 3), keepdim=True) * x.shape[3]).clamp(min=1.0)
            s = (x * mask).sum(dim=(2, 3), keepdim=True) / denom
        gate = torch.sigmoid(self.expand(self.act(self.reduce(s))))
        if torch.is_inference_mode_enabled() and not x.requires_grad:
            return x.mul_(gate)  # inference: no autograd needs x, so no new [B, C, T, F] tensor
        return x * gate


class MBConv(nn.Module):
    """Mobile inverted bottleneck block (see the module docstring)."""

    #: (conv, BatchNorm owner, BatchNorm name) that :func:`slukd.models.inference_opt.optimize_for_inference` folds
    bn_folds = (("dw", "dw_post", "0"),)
    #: (conv, activation owner, activation name) fused into one kernel by optimize_for_inference
    act_fusions = (("dw", "dw_post", "1"),)

    def __init__(
        self, c_in: int, c_out: int, expand: int, kernel: int, stride: tuple[int, int], se_ratio: float = 0.25
    ) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = (
            nn.Sequential(nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
            if expand != 1
            else None
        )
        self.dw = nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden, bias=False)
        self.dw_post = nn.Sequential(nn.BatchNorm2d(hidden), nn.SiLU())
        self.se = SqueezeExcite(hidden, max(1, int(c_in * se_ratio)))
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == (1, 1) and c_in == c_out

    def forward(self, x: Tensor, rel_lens: Tensor | None) -> Tensor:
        """x [B, C, T, F] -> [B, C', T', F']; ``rel_lens`` None means no padding (masks skipped)."""
        h = x
        if self.expand is not None:
            h = self.expand[2](self.expand[1](_pointwise(self.expand[0], h)))
        if rel_lens is not None:
            h = h * _time_mask(rel_lens, h.shape[2])
        h = self.dw_post(self.dw(h))
        m = _time_mask(rel_lens, h.shape[2]) if rel_lens is not None else None
        h = self.se(h, m)
        y = self.project[1](_pointwise(self.project[0], h))
        if self.residual:
            y = y + x
        return y * m if m is not None else y


class CNNEncoder(AudioEncoder):
    """EfficientNet-style CNN encoder: feats [B, T, F] -> enc [B, T', out_dim] (see the module docstring).

    Args:
        n_feats: input feature bins F (e.g. 64 mels).
        width, depth: EfficientNet compound scaling of channels and repeats (B2: 1.1, 1.2).
        time_stride_stages: indices of the strided stages (0 = stem, 1..7 = B0 stages 1..7 whose stride is 2,
            i.e. stem, 2, 3, 4, 6) that also stride in time; the others stride in frequency only.
            Default (0, 2): 4x fewer frames.
        head_channels: channels of the final 1x1 conv (default 1280 * width); out_dim = head_channels unless
            ``out_dim`` is given (then a Linear maps to it).
        max_stages: use only the first ``max_stages`` B0 stages (small students).
        dropout: dropout on the output frames.
    """

    def __init__(
        self,
        n_feats: int,
        *,
        width: float = 1.1,
        depth: float = 1.2,
        time_stride_stages: Sequence[int] = (0, 2),
        head_channels: int | None = None,
        out_dim: int | None = None,
        max_stages: int = 7,
        se_ratio: float = 0.25,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not 1 <= max_stages <= len(B0_STAGES):
            raise ValueError(f"max_stages must be in 1..{len(B0_STAGES)}, got {max_stages}")
        self.n_feats = n_feats
        tss = set(int(i) for i in time_stride_stages)
        stem_c = _round_channels(32 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem_c, 3, stride=(2 if 0 in tss else 1, 2), padding=1, bias=False),
            nn.BatchNorm2d(stem_c),
            nn.SiLU(),
        )
        self.time_downsampling = 2 if 0 in tss else 1
        blocks: list[MBConv] = []
        c_in = stem_c
        for i, (e, k, s, c, r) in enumerate(B0_STAGES[:max_stages], start=1):
            c_out = _round_channels(c * width)
            for j in range(int(math.ceil(r * depth))):
                stride = (1, 1)
                if j == 0 and s == 2:
                    stride = (2 if i in tss else 1, 2)
                    self.time_downsampling *= stride[0]
                blocks.append(MBConv(c_in, c_out, e, k, stride, se_ratio))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        head = head_channels or _round_channels(1280 * width)
        self.head = nn.Sequential(nn.Conv2d(c_in, head, 1, bias=False), nn.BatchNorm2d(head), nn.SiLU())
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(head, out_dim) if out_dim else nn.Identity()
        self.out_dim = int(out_dim or head)

    def forward(self, feats: Tensor, rel_lens: Tensor) -> Tensor:
        """feats [B, T, F], rel_lens [B] relative -> [B, T', out_dim]; padded output frames are 0."""
        if feats.dim() != 3 or feats.shape[-1] != self.n_feats:
            raise ValueError(f"CNNEncoder expects feats [B, T, {self.n_feats}], got {tuple(feats.shape)}")
        lens = None if bool((rel_lens >= 1.0).all()) else rel_lens  # no padding: skip every mask
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        if lens is not None:
            x = x * _time_mask(lens, feats.shape[1])
        x = self.stem(x).contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x = block(x, lens)
        if lens is not None:
            x = x * _time_mask(lens, x.shape[2])
        x = self.head[2](self.head[1](_pointwise(self.head[0], x)))
        x = x.mean(dim=3).transpose(1, 2)  # [B, T', C]
        x = self.proj(self.dropout(x))
        if lens is not None:
            x = x * _time_mask(lens, x.shape[1])[:, 0]
        return x
