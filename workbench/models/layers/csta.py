"""Causal spatial-temporal attention (CSTA) of Trace, with a plain reference twin.

CSTA factorises attention over the patch tokens ``(B, N steps, C channels, d)`` into

- a spatial branch: multi-head attention across the channels of one step (sequence length
  ``C``; padding channels are masked as keys), no positional rotation (the channel PE is added
  to the embeddings);
- a causal temporal branch: multi-head attention of each channel over its own patches with a
  lower-triangular mask (sequence length ``N``), RoPE on the step index;

the two outputs are concatenated and projected back to ``d_model`` (eq. 21). Projections are
``nn.Linear`` layers (LoRA adapters can wrap them). ``impl="fast"`` runs
``F.scaled_dot_product_attention``; ``impl="ref"`` materialises the softmax
(:func:`attend_ref`). :meth:`CSTA.step` is the cached, one-step form used for streaming.

References
----------
.. [1] "Trace: Temporal Routing with Autoregressive Cross-channel Experts for EEG Representation
       Learning", Appendix G.1, equations (19)-(21).
.. [2] Su, J. et al. (2021). RoFormer: Enhanced Transformer with Rotary Position Embedding.
       arXiv:2104.09864.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.models.layers.rope import RotaryEmbedding, apply_rope
from workbench.utils import check_option

__all__ = ["CSTA", "attend", "attend_ref"]


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
           causal: bool = False) -> Tensor:
    """Scaled dot-product attention, ``q`` (..., Lq, e), ``k``/``v`` (..., Lk, e).

    ``mask`` is boolean, broadcastable to (..., Lq, Lk), True = may attend. ``causal`` masks
    key ``j > i`` (square inputs). Runs ``F.scaled_dot_product_attention``.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def attend_ref(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
               causal: bool = False) -> Tensor:
    """Reference twin of :func:`attend`: the softmax matrix written out."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    if causal:
        lq, lk = scores.shape[-2:]
        tri = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~tri, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).type_as(v) @ v


class CSTA(nn.Module):
    """Causal spatial-temporal multi-head attention on ``(B, N, C, d_model)``.

    Parameters
    ----------
    d_model : int
        Token width.
    n_heads : int
        Query heads of each branch (8 paper).
    n_kv_heads : int, optional
        Key/value heads (grouped-query attention); default ``n_heads`` (**our default**: the
        value in Table 6 is lost).
    rope_base : float
        RoPE base of the temporal branch (**our default** 10000).
    impl : {"fast", "ref"}
        SDPA or the reference twin.

    Notes
    -----
    ``forward(x (B, N, C, d), ch_mask (B, C) or None) -> (B, N, C, d)``. The output at step
    ``t`` depends on steps ``<= t`` only.

    References
    ----------
    .. [1] "Trace", Appendix G.1.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None,
                 rope_base: float = 10000.0, impl: str = "fast") -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"Invalid values for 'd_model', 'n_heads', 'n_kv_heads': d_model "
                             f"must divide by n_heads and n_heads by n_kv_heads, got "
                             f"{d_model}, {n_heads}, {n_kv_heads}.")
        self.impl = check_option("impl", impl, ["fast", "ref"])
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        kv_dim = 2 * n_kv_heads * self.head_dim
        self.spatial_q = nn.Linear(d_model, d_model, bias=False)
        self.spatial_kv = nn.Linear(d_model, kv_dim, bias=False)
        self.temporal_q = nn.Linear(d_model, d_model, bias=False)
        self.temporal_kv = nn.Linear(d_model, kv_dim, bias=False)
        self.out = nn.Linear(2 * d_model, d_model, bias=False)  # W_o on [spatial; temporal]
        self.rope = RotaryEmbedding(self.head_dim, base=rope_base)

    # ------------------------------------------------------------------ helpers
    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        if self.n_kv_heads != self.n_heads:  # grouped-query attention: share each kv head
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        fn = attend if self.impl == "fast" else attend_ref
        return fn(q, k, v, mask, causal)

    def _heads(self, x: Tensor, q_proj: nn.Linear, kv_proj: nn.Linear,
               positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (M, L, d) -> q (M, h, L, e), k and v (M, h_kv, L, e); RoPE at ``positions``."""
        M, L, _ = x.shape
        q = q_proj(x)  # (M, L, h e)
        k, v = kv_proj(x).chunk(2, dim=-1)  # (M, L, h_kv e) each
        if positions is not None:
            # RoPE on the flat features: pairs (2i, 2i+1) never straddle two heads (e is even),
            # so the per-head tables tiled over the heads rotate every head at once.
            cos, sin = self.rope.tables(positions.to(x.device))  # (L, e / 2)
            q = apply_rope(q.float(), cos.repeat(1, self.n_heads),
                           sin.repeat(1, self.n_heads)).type_as(v)
            k = apply_rope(k.float(), cos.repeat(1, self.n_kv_heads),
                           sin.repeat(1, self.n_kv_heads)).type_as(v)
        q = q.view(M, L, self.n_heads, self.head_dim).transpose(1, 2)  # (M, h, L, e)
        k = k.reshape(M, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (M, h_kv, L, e)
        v = v.reshape(M, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def spatial(self, x: Tensor, ch_mask: Tensor | None) -> Tensor:
        """Spatial branch on ``x`` (B, N, C, d) -> (B, N, C, d)."""
        B, N, C, d = x.shape
        q, k, v = self._heads(x.reshape(B * N, C, d), self.spatial_q, self.spatial_kv)
        mask = None
        if ch_mask is not None:  # padding channels are never keys
            mask = ch_mask[:, None, None, None, :].expand(B, N, 1, 1, C).reshape(B * N, 1, 1, C)
        o = self._attend(q, k, v, mask)  # (B*N, h, C, e)
        return o.transpose(1, 2).reshape(B, N, C, d)

    def temporal(self, x: Tensor) -> Tensor:
        """Causal temporal branch on ``x`` (B, N, C, d) -> (B, N, C, d)."""
        B, N, C, d = x.shape
        xt = x.transpose(1, 2).reshape(B * C, N, d)  # (B*C, N, d): one sequence per channel
        q, k, v = self._heads(xt, self.temporal_q, self.temporal_kv,
                              torch.arange(N, device=x.device))  # RoPE at steps 0..N-1
        o = self._attend(q, k, v, causal=True)  # (B*C, h, N, e)
        return o.transpose(1, 2).reshape(B, C, N, d).transpose(1, 2)  # (B, N, C, d)

    def forward(self, x: Tensor, ch_mask: Tensor | None = None) -> Tensor:
        return self.out(torch.cat([self.spatial(x, ch_mask), self.temporal(x)], dim=-1))

    # ------------------------------------------------------------------ streaming
    def step(self, x_t: Tensor, cache: dict[str, Tensor], pos: int,
             ch_mask: Tensor | None = None) -> Tensor:
        """One step ``x_t`` (B, C, d) at step index ``pos``; ``cache`` holds the temporal keys
        and values of the earlier steps (buffers ``"k"``, ``"v"``: (B*C, h_kv, capacity, e),
        the first ``"n"`` filled) and is updated.
        """
        B, C, d = x_t.shape
        s = self.spatial(x_t[:, None], ch_mask)[:, 0]  # (B, C, d)
        q, k, v = self._heads(x_t.reshape(B * C, 1, d), self.temporal_q, self.temporal_kv,
                              torch.tensor([pos], device=x_t.device))
        n = cache.get("n", 0)
        if "k" not in cache or cache["k"].shape[2] == n:  # grow the buffers by doubling:
            cap = max(8, 2 * n)  # amortised O(1) per step instead of a full copy per step
            for name, new in (("k", k), ("v", v)):
                buf = new.new_empty(new.shape[0], new.shape[1], cap, new.shape[3])
                if n:
                    buf[:, :, :n] = cache[name][:, :, :n]
                cache[name] = buf
        cache["k"][:, :, n] = k[:, :, 0]
        cache["v"][:, :, n] = v[:, :, 0]
        cache["n"] = n = n + 1
        k, v = cache["k"][:, :, :n], cache["v"][:, :, :n]  # (B*C, h_kv, pos + 1, e)
        o = self._attend(q, k, v)  # one query sees every cached step: no mask needed
        t = o.transpose(1, 2).reshape(B, C, d)
        return self.out(torch.cat([s, t], dim=-1))
