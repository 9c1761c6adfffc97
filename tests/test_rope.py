"""RoPE is a rotation with the relative-position property; RMSNorm normalises."""

import torch

from workbench.models.layers.rope import RMSNorm, RotaryEmbedding


def test_rope_keeps_norms_and_depends_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 16), torch.randn(1, 16)
    x = torch.randn(2, 3, 10, 16)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))

    def score(i, j):
        qi = rope(q, torch.tensor([i]))
        kj = rope(k, torch.tensor([j]))
        return (qi * kj).sum()

    torch.testing.assert_close(score(3, 1), score(10, 8))
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_rmsnorm_unit_rms():
    x = torch.randn(4, 32) * 7 + 1
    y = RMSNorm(32)(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4), rtol=1e-4, atol=1e-4)
