"""Tests of the shared task heads and the 1x1-convolution channel adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.models.layers.heads import ChannelAdapter, LinearHead, MLPHead, make_head


def test_heads_compute_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    lin = make_head("linear", 6, 3)
    assert isinstance(lin, LinearHead)
    torch.testing.assert_close(lin(x), x @ lin.fc.weight.T + lin.fc.bias)
    mlp = make_head("mlp", 6, 3, hidden=5, dropout=0.3).eval()  # eval: dropout is identity
    assert isinstance(mlp, MLPHead) and mlp.fc1.out_features == 5
    expected = F.gelu(x @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias
    torch.testing.assert_close(mlp(x), expected)
    assert make_head("mlp", 6, 3).fc1.out_features == 6  # hidden defaults to in_features
    with pytest.raises(ValueError, match="'head'"):
        make_head("transformer", 6, 3)
    with pytest.raises(ValueError, match="n_outputs"):
        make_head("linear", 6, 0)


def test_channel_adapter_is_a_channel_mix_and_ignores_padding():
    torch.manual_seed(0)
    ad = ChannelAdapter(4, 3)
    x = torch.randn(2, 4, 10)
    expected = torch.einsum("oi,bit->bot", ad.conv.weight[:, :, 0], x) + ad.conv.bias[:, None]
    torch.testing.assert_close(ad(x), expected, rtol=1e-5, atol=1e-6)
    ch_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    noisy = x.clone()
    noisy[~ch_mask] = 1e3 * torch.randn(int((~ch_mask).sum()), 10)  # padding content
    zeroed = x * ch_mask[:, :, None]
    torch.testing.assert_close(ad(noisy, ch_mask), ad(zeroed), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(batch, 4, time\)"):
        ad(torch.randn(2, 5, 10))


def test_channel_adapter_from_names_copies_shared_channels():
    ad = ChannelAdapter.from_names(["FP1", "Cz", "O1"], ["Cz", "Fp1", "T7"])
    x = torch.randn(1, 3, 8)
    y = ad(x)
    torch.testing.assert_close(y[0, 0], x[0, 1])  # Cz
    torch.testing.assert_close(y[0, 1], x[0, 0])  # FP1 -> Fp1
    torch.testing.assert_close(y[0, 2], x[0].mean(0), rtol=1e-5, atol=1e-6)  # T7: the average
