"""Criss-cross attention over a grid of EEG tokens (channels x patches), and full attention.

Tokens of a window form a grid ``(B, C, P, d)``: ``C`` channels by ``P`` patch steps.
:class:`CrissCrossAttention` splits the features in two halves (as CBraMod): the first half
attends *spatially*, across the ``C`` channels at each patch step; the second half attends
*temporally*, across the ``P`` patches of each channel, with rotary position embeddings (RoPE)
on the patch index. The two halves have their own projections and heads and are concatenated.
A token therefore attends to ``C + P`` tokens instead of ``C * P``: the attention cost is
``O(C^2 P + P^2 C)`` instead of ``O(C^2 P^2)``.

Key validity ``key_valid`` (B, C, P) (True = a token others may attend to) serves both masked
pre-training (masked patches are not keys, so they never reach a visible token) and
mixed-montage batches (padding channels are not keys). A sequence with no valid key at all
(every channel of a step masked) lets each query attend to itself only, so no row of the
softmax is empty (an empty row would give NaN, and NaN gradients).

Every path has a plain twin: ``impl="plain"`` computes ``softmax(q k^T / sqrt(h) + mask) v``
with the matrix materialised (:func:`attention_ref`), ``impl="sdpa"`` (default) calls
``F.scaled_dot_product_attention``; :func:`criss_cross_attention_ref` computes the criss-cross
layer as full attention over all ``C * P`` tokens restricted by the equivalent block mask.

References
----------
.. [1] J. Wang et al., "CBraMod: A criss-cross brain foundation model for EEG decoding",
       arXiv:2412.07236, 2024 (criss-cross attention).
.. [2] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Section 2.1 and Table 3.
.. [3] J. Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding",
       arXiv:2104.09864, 2021.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.models.layers.rope import RotaryEmbedding
from workbench.utils import check_option

__all__ = [
    "IMPLS",
    "CrissCrossAttention",
    "FullAttention",
    "Mlp",
    "TransformerBlock",
    "attention",
    "attention_ref",
    "criss_cross_attention_ref",
    "criss_cross_masks",
    "self_attention_mask",
]

IMPLS = ("sdpa", "plain")


def self_attention_mask(valid: Tensor) -> Tensor:
    """Boolean attention mask (N, 1, L, L) (True = may attend) from key validity (N, L).

    Query ``i`` may attend key ``j`` when ``valid[j]``; in a sequence with no valid key every
    query attends to itself only (so no softmax row is empty).
    """
    N, L = valid.shape
    empty = ~valid.any(-1)  # (N,)
    eye = torch.eye(L, dtype=torch.bool, device=valid.device)
    allowed = valid[:, None, :] | (eye[None] & empty[:, None, None])  # (N, L, L)
    return allowed[:, None]  # (N, 1, L, L): broadcast over heads


def criss_cross_masks(key_valid: Tensor) -> tuple[Tensor, Tensor]:
    """Spatial (B*P, 1, C, C) and temporal (B*C, 1, P, P) masks from key validity (B, C, P).

    Computed once per forward and shared by every :class:`CrissCrossAttention` of a stack.
    """
    B, C, P = key_valid.shape
    spatial = self_attention_mask(key_valid.transpose(1, 2).reshape(B * P, C))
    temporal = self_attention_mask(key_valid.reshape(B * C, P))
    return spatial, temporal


def attention_ref(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Plain scaled dot-product attention: ``softmax(q k^T / sqrt(h), masked) v``.

    ``q``, ``k``, ``v`` (N, heads, L, h); ``mask`` boolean, broadcastable to (N, heads, L, L),
    True = may attend. The reference twin of :func:`attention`.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (N, heads, L, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (N, heads, L, h)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
              impl: str = "sdpa") -> Tensor:
    """Scaled dot-product attention by ``F.scaled_dot_product_attention`` (``impl="sdpa"``) or
    by the plain :func:`attention_ref` (``impl="plain"``); same arguments as the latter."""
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attention_ref(q, k, v, mask)


def _heads(x: Tensor, n_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Fused projections (N, L, 3 * w) -> q, k, v (N, heads, L, w / heads)."""
    N, L, w3 = x.shape
    qkv = x.view(N, L, 3, n_heads, w3 // (3 * n_heads)).permute(2, 0, 3, 1, 4)  # (3, N, nh, L, h)
    return qkv.unbind(0)


def _merge(x: Tensor) -> Tensor:
    """(N, heads, L, h) -> (N, L, heads * h)."""
    N, nh, L, h = x.shape
    return x.transpose(1, 2).reshape(N, L, nh * h)


class CrissCrossAttention(nn.Module):
    """Spatial (across channels) + temporal (across patches) attention on a token grid.

    Parameters
    ----------
    dim : int
        Token width ``d``; each direction works on ``d / 2`` features.
    n_heads : int
        Total heads (even); each direction gets ``n_heads / 2`` (2 in the paper: one each).
    qkv_bias : bool
        Bias of the query/key/value projections (True in the paper).
    rope : bool
        Rotary embedding of the patch index in the temporal direction.
    rope_base : float
        RoPE base.
    impl : {"sdpa", "plain"}
        Attention kernel (settable attribute; the two agree, see the tests).

    Notes
    -----
    ``forward(x, key_valid=None, positions=None, masks=None)``: ``x`` (B, C, P, d),
    ``key_valid`` (B, C, P) bool (or ``masks``, its :func:`criss_cross_masks`), ``positions``
    (P,) patch indices for RoPE (default ``0..P-1``); returns (B, C, P, d).
    Projections are ``nn.Linear`` modules (``qkv_s``, ``proj_s``, ``qkv_t``, ``proj_t``) so
    adapters such as LoRA can wrap them.
    """

    def __init__(self, dim: int, n_heads: int = 2, qkv_bias: bool = True, rope: bool = True,
                 rope_base: float = 10000.0, impl: str = "sdpa") -> None:
        super().__init__()
        if dim % 2 or n_heads % 2 or n_heads < 2:
            raise ValueError(f"Invalid values for 'dim' and 'n_heads': criss-cross attention "
                             f"splits both in two (spatial, temporal); expected even values, "
                             f"got dim={dim}, n_heads={n_heads}.")
        half, nh = dim // 2, n_heads // 2
        if half % nh:
            raise ValueError(f"Invalid value for the 'n_heads' parameter: dim / 2 = {half} is "
                             f"not divisible by n_heads / 2 = {nh}.")
        self.dim, self.half, self.heads = dim, half, nh
        self.impl = check_option("impl", impl, IMPLS)
        self.qkv_s = nn.Linear(half, 3 * half, bias=qkv_bias)
        self.proj_s = nn.Linear(half, half)
        self.qkv_t = nn.Linear(half, 3 * half, bias=qkv_bias)
        self.proj_t = nn.Linear(half, half)
        self.rope = RotaryEmbedding(half // nh, base=rope_base) if rope else None

    def forward(self, x: Tensor, key_valid: Tensor | None = None,
                positions: Tensor | None = None,
                masks: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B, C, P, d = x.shape
        h = self.half
        if masks is None and key_valid is not None:
            masks = criss_cross_masks(key_valid)
        mask_s, mask_t = (None, None) if masks is None else masks
        # Spatial: one sequence of C channels per (window, patch step).
        xs = x[..., :h].transpose(1, 2).reshape(B * P, C, h)  # (B*P, C, h)
        q, k, v = _heads(self.qkv_s(xs), self.heads)  # (B*P, nh, C, hd)
        os_ = self.proj_s(_merge(attention(q, k, v, mask_s, self.impl)))  # (B*P, C, h)
        os_ = os_.view(B, P, C, h).transpose(1, 2)  # (B, C, P, h)
        # Temporal: one sequence of P patches per (window, channel), RoPE on the patch index.
        xt = x[..., h:].reshape(B * C, P, h)  # (B*C, P, h)
        q, k, v = _heads(self.qkv_t(xt), self.heads)  # (B*C, nh, P, hd)
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        ot = self.proj_t(_merge(attention(q, k, v, mask_t, self.impl)))  # (B*C, P, h)
        return torch.cat([os_, ot.view(B, C, P, h)], dim=-1)  # (B, C, P, d)


def criss_cross_attention_ref(layer: CrissCrossAttention, x: Tensor,
                              key_valid: Tensor | None = None) -> Tensor:
    """:class:`CrissCrossAttention` computed as full attention over all ``C * P`` tokens.

    The spatial half attends over the grid with the block mask "same patch step and valid key",
    the temporal half with "same channel and valid key" (RoPE at each token's patch index); a
    query whose block holds no valid key attends to itself. Plain math, materialised
    ``(C P) x (C P)`` matrices: the reference twin of the layer's forward.
    """
    B, C, P, d = x.shape
    h, nh = layer.half, layer.heads
    step = torch.arange(P, device=x.device).repeat(C)  # (C*P,) patch index of each token
    chan = torch.arange(C, device=x.device).repeat_interleave(P)  # (C*P,) channel of each token
    valid = (torch.ones(B, C * P, dtype=torch.bool, device=x.device) if key_valid is None
             else key_valid.reshape(B, C * P))

    def block_mask(same: Tensor) -> Tensor:  # same (L, L) -> (B, 1, L, L)
        allowed = same[None] & valid[:, None, :]  # (B, L, L)
        empty = ~allowed.any(-1, keepdim=True)  # (B, L, 1): no valid key in the query's block
        eye = torch.eye(C * P, dtype=torch.bool, device=x.device)
        return (allowed | (eye[None] & empty))[:, None]

    flat = x.reshape(B, C * P, d)  # (B, C*P, d)
    q, k, v = _heads(layer.qkv_s(flat[..., :h]), nh)  # (B, nh, C*P, hd)
    os_ = layer.proj_s(_merge(attention_ref(q, k, v, block_mask(step[:, None] == step[None]))))
    q, k, v = _heads(layer.qkv_t(flat[..., h:]), nh)
    if layer.rope is not None:
        q, k = layer.rope(q, step), layer.rope(k, step)
    ot = layer.proj_t(_merge(attention_ref(q, k, v, block_mask(chan[:, None] == chan[None]))))
    return torch.cat([os_, ot], dim=-1).view(B, C, P, d)


class FullAttention(nn.Module):
    """Multi-head self-attention over a token sequence, optional RoPE at given positions.

    Parameters
    ----------
    dim, n_heads : int
        Width and heads.
    qkv_bias : bool
        Bias of the query/key/value projection.
    rope : bool
        Rotate queries and keys by their ``positions``.
    rope_base : float
        RoPE base.
    impl : {"sdpa", "plain"}
        Attention kernel (settable attribute).

    Notes
    -----
    ``forward(x, key_valid=None, positions=None)``: ``x`` (N, L, dim), ``key_valid`` (N, L)
    bool (every row needs a valid key), ``positions`` (L,) (default ``0..L-1``).
    """

    def __init__(self, dim: int, n_heads: int = 2, qkv_bias: bool = True, rope: bool = True,
                 rope_base: float = 10000.0, impl: str = "sdpa") -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"Invalid value for the 'n_heads' parameter: dim={dim} is not "
                             f"divisible by n_heads={n_heads}.")
        self.heads = n_heads
        self.impl = check_option("impl", impl, IMPLS)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = RotaryEmbedding(dim // n_heads, base=rope_base) if rope else None

    def forward(self, x: Tensor, key_valid: Tensor | None = None,
                positions: Tensor | None = None) -> Tensor:
        q, k, v = _heads(self.qkv(x), self.heads)  # (N, nh, L, hd)
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        mask = None if key_valid is None else key_valid[:, None, None, :]  # (N, 1, 1, L)
        return self.proj(_merge(attention(q, k, v, mask, self.impl)))  # (N, L, dim)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` (two ``nn.Linear``, hidden width ``hidden``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block ``x + attn(LN(x), **kw)`` then ``x + MLP(LN(x))`` around any attention.

    Parameters
    ----------
    dim : int
        Token width.
    attn : nn.Module
        :class:`CrissCrossAttention` or :class:`FullAttention`; keyword arguments of
        ``forward`` are passed to it.
    mlp_ratio : float
        MLP hidden width / ``dim`` (4 in the paper).
    norm_eps : float
        LayerNorm epsilon (1e-6 in the paper).
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)))

    def forward(self, x: Tensor, **attn_kw: Tensor | None) -> Tensor:
        x = x + self.attn(self.norm1(x), **attn_kw)
        return x + self.mlp(self.norm2(x))
