"""Rotary position embeddings (RoPE) and RMSNorm, shared by the Transformer-style models.

RoPE rotates each pair of feature dimensions ``(2i, 2i+1)`` of a query or key at position ``p``
by the angle ``p * base^(-2i/d)``; the dot product of a rotated query and key then depends only
on their relative position.

References
----------
.. [1] Su, J. et al. (2021). RoFormer: Enhanced Transformer with Rotary Position Embedding.
       arXiv:2104.09864.
.. [2] Zhang, B. & Sennrich, R. (2019). Root Mean Square Layer Normalization. NeurIPS.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RMSNorm", "RotaryEmbedding", "apply_rope"]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs of the last dimension of ``x`` (..., T, d).

    ``cos`` and ``sin`` are (T, d / 2) (or broadcastable to ``x[..., ::2]``).
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, d/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., T, d/2, 2)
    return out.flatten(-2).type_as(x)


class RotaryEmbedding(nn.Module):
    """Cos/sin tables of RoPE for head dimension ``dim`` (even).

    ``rope(x, positions=None)`` rotates ``x`` (..., T, dim) at positions ``0..T-1`` or at the
    given integer ``positions`` (T,) (e.g. an offset for cached decoding).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Invalid value for the 'dim' parameter: RoPE needs an even head "
                             f"dimension, got {dim}.")
        self.dim = dim
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def tables(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, dim/2)
        return angles.cos(), angles.sin()

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        if positions is None:
            positions = torch.arange(x.shape[-2], device=x.device)
        cos, sin = self.tables(positions.to(x.device))
        return apply_rope(x.float(), cos, sin).type_as(x)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).type_as(x)
