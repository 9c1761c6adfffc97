"""A decoder-only Transformer: pre-norm blocks, causal self-attention, SwiGLU MLP, RoPE, KV cache.

One block is ``x = x + Attn(RMSNorm(x)); x = x + SwiGLU(RMSNorm(x))`` (the LLaMA layout), the
stack ends with a final RMSNorm. Attention runs on ``F.scaled_dot_product_attention``
(:func:`attention`) or on its plain twin :func:`attention_ref` (softmax of ``Q K^T / sqrt(d) + M``
written out), chosen by ``attn_impl``; both give the same numbers (``tests/test_eegpt.py``).

Causal masks are aligned bottom-right: with ``L`` queries and ``S >= L`` keys (a cache holding
``S - L`` earlier positions), query ``i`` sits at position ``S - L + i`` and sees the keys
``j <= S - L + i``. That makes a cached rollout (one new token per step, :class:`KVCache`)
compute exactly what re-running the whole sequence computes.

The projections are ``nn.Linear`` layers called directly (no ``nn.MultiheadAttention``), so
LoRA adapters (peft) can wrap them (``qkv_proj``, ``o_proj``, ``w_gate_up``, ``w_down``).

References
----------
.. [1] Vaswani, A. et al. (2017). Attention Is All You Need. NeurIPS.
.. [2] Shazeer, N. (2020). GLU Variants Improve Transformer. arXiv:2002.05202 (SwiGLU).
.. [3] Su, J. et al. (2021). RoFormer: Enhanced Transformer with Rotary Position Embedding.
       arXiv:2104.09864.
.. [4] Touvron, H. et al. (2023). LLaMA: Open and Efficient Foundation Language Models.
       arXiv:2302.13971 (pre-norm RMSNorm + SwiGLU + RoPE decoder).
.. [5] Yue, T. et al. (2024). EEGPT: Unleashing the Potential of EEG Generalist Foundation
       Model by Autoregressive Pre-training. arXiv:2410.19779 (causal ETE with SwiGLU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.models.layers.rope import RMSNorm, RotaryEmbedding, apply_rope
from workbench.utils import check_option

__all__ = [
    "CausalSelfAttention",
    "DecoderBlock",
    "DecoderTransformer",
    "KVCache",
    "SwiGLU",
    "attention",
    "attention_ref",
]

ATTN_IMPLS = ("sdpa", "plain")


def _causal_keep(L: int, S: int, device: torch.device) -> Tensor:
    """Bool (L, S): query ``i`` (at position ``S - L + i``) may see key ``j``."""
    return torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal=S - L)


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, dropout_p: float = 0.0
              ) -> Tensor:
    """Scaled dot-product attention on ``F.scaled_dot_product_attention``.

    ``q`` (B, H, L, D), ``k`` and ``v`` (B, H, S, D) with ``S >= L``; the causal mask is aligned
    bottom-right (see the module docstring). Returns (B, H, L, D).
    """
    L, S = q.shape[-2], k.shape[-2]
    if not causal or L == 1:  # one new query sees every cached key: no mask to build
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if L == S:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    # SDPA's is_causal aligns top-left when L != S, so a chunk after a cache gets an explicit mask.
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_keep(L, S, q.device),
                                          dropout_p=dropout_p)


def attention_ref(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, dropout_p: float = 0.0
                  ) -> Tensor:
    """Plain twin of :func:`attention`: ``softmax(Q K^T / sqrt(d) + M) V`` written out,
    ``M = -inf`` where a query may not see a key."""
    L, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, L, S)
    if causal:
        scores = scores.masked_fill(~_causal_keep(L, S, q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v  # (B, H, L, D)


class KVCache:
    """Pre-allocated keys and values of every layer, for incremental (inference-only) decoding.

    ``update(layer, k, v)`` writes the new keys/values (B, H, L, D) of one layer after the
    ``length`` cached positions and returns all of them (B, H, length + L, D); ``advance(L)``
    moves ``length`` on once every layer has been updated.

    Parameters
    ----------
    n_layers, batch, n_heads, head_dim, max_len : int
        Sizes; ``max_len`` bounds the total number of positions.
    dtype, device
        Of the buffers (those of the model's activations).
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len, self.length = max_len, 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KVCache: {end} positions exceed 'max_len' ({self.max_len}); "
                             "allocate a larger cache.")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.Linear`` projections (``qkv_proj``: Q, K, V stacked in one
    matmul; ``o_proj``) and optional RoPE.

    ``forward(x (B, L, d), cos, sin, causal, cache, layer, impl)``: ``cos``/``sin`` (L, D/2) are
    the RoPE tables of the L positions (None: no rotary positions).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"Invalid 'n_heads': d_model ({d_model}) must be divisible by "
                             f"n_heads ({n_heads}).")
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)  # W_Q, W_K, W_V stacked
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None,
                causal: bool = True, cache: KVCache | None = None, layer: int = 0,
                impl: str = "sdpa") -> Tensor:
        B, L, d = x.shape
        H, D = self.n_heads, self.head_dim
        qkv = self.qkv_proj(x).view(B, L, 3, H, D)  # one matmul for Q = X W_Q, K, V
        qk = qkv[:, :, :2]  # (B, L, 2, H, D)
        if cos is not None:  # one rotation call for Q and K (positions along L)
            qk = apply_rope(qk, cos[:, None, None], sin[:, None, None])
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, D)
        v = qkv[:, :, 2].transpose(1, 2)  # (B, H, L, D)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, S, D), S = cached + L
        p = self.dropout if self.training else 0.0
        fn = attention if impl == "sdpa" else attention_ref
        out = fn(q, k, v, causal=causal, dropout_p=p)  # (B, H, L, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, d))  # (B, L, d)


class SwiGLU(nn.Module):
    """``W_down (SiLU(W_gate x) * W_up x)``, bias-free; ``W_gate`` and ``W_up`` in one Linear."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_gate_up = nn.Linear(d_model, 2 * hidden, bias=False)  # W_gate, W_up stacked
        self.w_down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class DecoderBlock(nn.Module):
    """Pre-norm block: ``x + Attn(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = RMSNorm(d_model, norm_eps)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.norm2 = RMSNorm(d_model, norm_eps)
        self.mlp = SwiGLU(d_model, ffn_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cos: Tensor | None, sin: Tensor | None, causal: bool = True,
                cache: KVCache | None = None, layer: int = 0, impl: str = "sdpa") -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin, causal, cache, layer, impl))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderTransformer(nn.Module):
    """A stack of :class:`DecoderBlock` with a final RMSNorm, over sequences (B, L, d_model).

    Parameters
    ----------
    d_model, n_layers, n_heads : int
        Width, depth and attention heads.
    ffn_dim : int or None
        Hidden width of the SwiGLU MLP; None gives ``8/3 d_model`` rounded up to a multiple of 8
        (the LLaMA rule that keeps the parameter count of a 4x GELU MLP).
    dropout : float
        Dropout on the attention weights and on both residual branches.
    pos : {"rope", "none"}
        Rotary positions on queries and keys, or none (the causal mask alone orders the tokens).
    rope_base : float
        RoPE frequency base.
    attn_impl : {"sdpa", "plain"}
        ``F.scaled_dot_product_attention`` or the written-out reference; ``forward(impl=...)``
        overrides it per call.
    norm_eps : float
        Epsilon of the RMSNorms.

    Notes
    -----
    ``forward(x, causal=True, cache=None)`` returns (B, L, d_model). With a :class:`KVCache`
    (from :meth:`new_cache`) the L new tokens take the positions after the cached ones.
    """

    def __init__(self, d_model: int, n_layers: int, n_heads: int, ffn_dim: int | None = None,
                 dropout: float = 0.0, pos: str = "rope", rope_base: float = 10000.0,
                 attn_impl: str = "sdpa", norm_eps: float = 1e-6):
        super().__init__()
        check_option("pos", pos, ["rope", "none"])
        check_option("attn_impl", attn_impl, ATTN_IMPLS)
        ffn_dim = ffn_dim or 8 * math.ceil(8 * d_model / 3 / 8)
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.pos, self.attn_impl = pos, attn_impl
        self.blocks = nn.ModuleList(DecoderBlock(d_model, n_heads, ffn_dim, dropout, norm_eps)
                                    for _ in range(n_layers))
        self.norm = RMSNorm(d_model, norm_eps)
        self.rope = RotaryEmbedding(d_model // n_heads, rope_base) if pos == "rope" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2 initialisation: N(0, 0.02), the residual outputs scaled by 1/sqrt(2 n_layers) so
        # the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * self.n_layers) if name.endswith(
                    ("o_proj.weight", "w_down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences of up to ``max_len`` tokens."""
        return KVCache(self.n_layers, batch, self.n_heads, self.d_model // self.n_heads,
                       max_len, dtype, device)

    def forward(self, x: Tensor, causal: bool = True, cache: KVCache | None = None,
                impl: str | None = None) -> Tensor:
        impl = check_option("impl", impl or self.attn_impl, ATTN_IMPLS)
        start = cache.length if cache is not None else 0
        cos = sin = None
        if self.rope is not None:
            positions = torch.arange(start, start + x.shape[1], device=x.device)
            cos, sin = self.rope.tables(positions)  # (L, D/2) each
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, causal, cache, i, impl)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.norm(x)
