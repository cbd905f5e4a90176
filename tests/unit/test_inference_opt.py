"""The fused linear + activation of optimize_for_inference: both of its paths (oneDNN fused kernel for many rows,
the two ops for a few) give the module's own output."""

import pytest
import torch

from slukd.models.inference_opt import FusedLinearAct


@pytest.mark.parametrize("rows", [3, 300])
@pytest.mark.parametrize("act", [torch.nn.GELU(), torch.nn.SiLU(), torch.nn.ReLU()])
def test_fused_linear_act_matches_unfused(rows, act):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 24)
    fused = FusedLinearAct(lin, act)
    x = torch.randn(rows, 1, 16)
    with torch.inference_mode():
        want = act(lin(x))
        got = fused(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert fused.min_rows > 3 and 300 >= fused.min_rows  # the two cases take the two paths
