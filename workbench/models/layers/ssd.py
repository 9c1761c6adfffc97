"""SSD, the scan of Mamba-2, in pure PyTorch: the chunked algorithm and its reference twin.

=================  ====================================================================
fast               reference
=================  ====================================================================
``ssd_chunked``    ``ssd_naive`` (step-by-step recurrence)
=================  ====================================================================

The paper's minimal Listing 1, the benchmark peer of ``ssd_chunked``, lives in
``benchmarks/ssd_minimal.py`` (it is not a library path: its inter-chunk term is quadratic).

Notation (shapes as in ``mamba_ssm``): ``b`` batch, ``L`` length, ``h`` heads, ``p`` head size,
``g`` groups of heads sharing ``B``/``C``, ``n`` state size, ``Q`` chunk length, ``c`` chunks.

References
----------
.. [1] T. Dao and A. Gu, "Transformers are SSMs: Generalized models and efficient algorithms
   through structured state space duality", ICML 2024, arXiv:2405.21060.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ssd_chunked", "ssd_naive"]


# ============================================================================ checks
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Scans accumulate long products of decays: never below float32.
    return torch.promote_types(dtype, torch.float32)


def _check_ssd_inputs(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                      D: Tensor | None, initial_state: Tensor | None) -> tuple[int, ...]:
    if x.dim() != 4:
        raise ValueError(f"Invalid shape for 'x': expected (batch, length, heads, headdim), "
                         f"got {tuple(x.shape)}.")
    b, L, h, p = x.shape
    if tuple(dt.shape) != (b, L, h):
        raise ValueError(f"Invalid shape for 'dt': expected {(b, L, h)}, got {tuple(dt.shape)}.")
    if tuple(A.shape) != (h,):
        raise ValueError(f"Invalid shape for 'A': expected ({h},), got {tuple(A.shape)}.")
    if B.dim() != 4 or tuple(B.shape[:2]) != (b, L):
        raise ValueError(f"Invalid shape for 'B': expected ({b}, {L}, groups, d_state), "
                         f"got {tuple(B.shape)}.")
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"Invalid shape for 'C': expected {tuple(B.shape)} (as 'B'), "
                         f"got {tuple(C.shape)}.")
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"Invalid number of groups in 'B'/'C': {g} groups must divide the "
                         f"{h} heads of 'x'.")
    if int(chunk_size) < 1:
        raise ValueError(f"Invalid value for the 'chunk_size' parameter: expected >= 1, "
                         f"got {chunk_size!r}.")
    if D is not None and tuple(D.shape) not in ((h,), (h, p)):
        raise ValueError(f"Invalid shape for 'D': expected ({h},) or ({h}, {p}), "
                         f"got {tuple(D.shape)}.")
    if initial_state is not None and tuple(initial_state.shape) != (b, h, p, n):
        raise ValueError(f"Invalid shape for 'initial_state': expected {(b, h, p, n)}, "
                         f"got {tuple(initial_state.shape)}.")
    return b, L, h, p, g, n


def _add_skip(y: Tensor, x: Tensor, D: Tensor | None) -> Tensor:
    if D is None:
        return y
    D = D.to(y.dtype)
    return y + x * (D[:, None] if D.dim() == 1 else D)  # (h, 1) or (h, p) broadcast on (b, L, h, p)


# ============================================================================ Mamba-2 scans
def _segsum_exp(a_cum: Tensor) -> Tensor:
    """``exp(a_cum[..., l] - a_cum[..., s])`` for ``s <= l`` and 0 above the diagonal.

    ``(..., Q) -> (..., Q, Q)``. The difference of in-chunk cumulative sums is what the fused
    ``mamba_ssm`` kernels compute too; one allocation, the rest in place.
    """
    Q = a_cum.shape[-1]
    seg = a_cum[..., :, None] - a_cum[..., None, :]  # (..., Q, Q): sum_{k=s+1..l} a_k
    causal = torch.ones(Q, Q, dtype=torch.bool, device=a_cum.device).tril()
    return seg.masked_fill_(~causal, float("-inf")).exp_()


_BLOCK_ELEMENTS = 1 << 20  # size of the largest temporary per block of chunks in ssd_chunked
_FACTOR_LIMIT = 0.4  # factored path while |in-chunk log-decay| <= 0.4 * log(dtype max)


def _pass_states(states: Tensor, chunk_decay: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """Linear scan over chunks: ``states`` (b, c, h, p, n) left by each chunk from a zero start,
    ``chunk_decay`` (b, c, h). Returns the states entering each chunk and the last state."""
    entering = []
    for j in range(states.shape[1]):
        entering.append(S)
        S = chunk_decay[:, j, :, None, None] * S + states[:, j]
    return torch.stack(entering, dim=1), S  # (b, c, h, p, n), (b, h, p, n)


def _ssd_block_factored(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, S: Tensor,
                        Q: int, g: int) -> tuple[Tensor, Tensor] | None:
    """SSD over ``k`` whole chunks with the in-chunk decay factored as a rank-one product.

    ``exp(a_cum[l] - a_cum[s]) = exp(rel[l]) * exp(-rel[s])`` with ``rel`` the log-decay
    centred on the chunk, so the diagonal blocks become ``exp(rel) * (tril(C B^T) @ (exp(-rel)
    dt x))``: one matrix product per chunk shared by all heads of a group, no (Q x Q) tensor per
    head. Every term that reaches the output is the exact product of factors that neither
    overflow nor underflow, so this is as accurate as the subtraction form; it is used only
    when ``|rel| <= _FACTOR_LIMIT * log(max float)`` in every chunk of the block (``None``
    otherwise: the caller falls back to :func:`_ssd_block_segsum`).

    ``x`` (b, k Q, h, p), ``dt`` (b, k Q, h), ``B``/``C`` (b, k Q, g, n), ``S`` (b, h, p, n)
    entering the first chunk. Returns the outputs (b, k Q, h, p) and the state after the block.
    """
    b, T, h, p = x.shape
    n, c, r = B.shape[-1], T // Q, h // g
    a_cum = torch.cumsum((dt * A).view(b, c, Q, h), dim=2)  # (b, c, Q, h) log-decay from start
    rel = a_cum - 0.5 * (a_cum[:, :, :1] + a_cum[:, :, -1:])  # (b, c, Q, h) centred per chunk
    if not bool(rel.abs().amax() <= _FACTOR_LIMIT * math.log(torch.finfo(x.dtype).max)):
        return None
    xs = x.view(b, c, Q, h, p) * (torch.exp(-rel) * dt.view(b, c, Q, h))[..., None]
    xs = xs.view(b, c, Q, g, r * p).transpose(2, 3)  # (b, c, g, Q, r p), a view when g = 1
    Bg = B.view(b, c, Q, g, n).transpose(2, 3)  # (b, c, g, Q, n)
    Cg = C.view(b, c, Q, g, n).transpose(2, 3)  # (b, c, g, Q, n)

    # 1. diagonal blocks, still scaled by exp(-rel[l])
    y = torch.tril(Cg @ Bg.transpose(-1, -2)) @ xs  # (b, c, g, Q, r p)
    # 2. state each chunk leaves from a zero start: exp(rel[end]) * sum_s xs_s B_s^T
    e_out = torch.exp(rel).view(b, c, Q, g, r).permute(0, 1, 3, 2, 4)  # (b, c, g, Q, r)
    states = (xs.transpose(-1, -2) @ Bg).view(b, c, g, r, p, n)  # (b, c, g, r, p, n)
    states = (states * e_out[:, :, :, -1, :, None, None]).view(b, c, h, p, n)
    # 3. linear scan over chunks
    S_in, S = _pass_states(states, torch.exp(a_cum[:, :, -1]), S)  # (b, c, h, p, n)
    # 4. off-diagonal blocks: C_l . S_in decayed by exp(a_cum[l])
    S_in = S_in.view(b, c, g, r, p, n).permute(0, 1, 2, 5, 3, 4).reshape(b, c, g, n, r * p)
    y_off = (Cg @ S_in).view(b, c, g, Q, r, p)  # (b, c, g, Q, r, p)
    e_in = torch.exp(a_cum).view(b, c, Q, g, r).permute(0, 1, 3, 2, 4)  # (b, c, g, Q, r)
    y = y.view(b, c, g, Q, r, p).mul_(e_out[..., None]).add_(y_off.mul_(e_in[..., None]))
    return y.transpose(2, 3).reshape(b, T, h, p), S  # (b, k Q, h, p)


def _ssd_block_segsum(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, S: Tensor,
                      Q: int, g: int) -> tuple[Tensor, Tensor]:
    """SSD over ``k`` whole chunks with an explicit (Q x Q) decay matrix per head.

    Valid for any decay (the general path of :func:`ssd_chunked`); same arguments and results
    as :func:`_ssd_block_factored`.
    """
    b, T, h, p = x.shape
    n, c, r = B.shape[-1], T // Q, h // g
    a = (dt * A).reshape(b, c, Q, h).transpose(2, 3).contiguous()  # (b, c, h, Q) step log-decay
    a_cum = torch.cumsum(a, dim=-1)  # (b, c, h, Q) log-decay from the chunk start
    xdt = (x * dt[..., None]).reshape(b, c, Q, g, r, p).permute(0, 1, 3, 4, 2, 5)  # (b,c,g,r,Q,p)
    Bc = B.reshape(b, c, Q, g, n).transpose(2, 3)  # (b, c, g, Q, n)
    Cc = C.reshape(b, c, Q, g, n).transpose(2, 3)  # (b, c, g, Q, n)

    # 1. Diagonal blocks: y[l] = sum_{s<=l} (C_l . B_s) exp(a_cum[l] - a_cum[s]) dt_s x_s
    decay = _segsum_exp(a_cum).reshape(b, c, g, r, Q, Q)  # (b, c, g, r, Q, Q)
    CB = Cc @ Bc.transpose(-1, -2)  # (b, c, g, Q, Q)
    y = (decay * CB[:, :, :, None]) @ xdt  # (b, c, g, r, Q, p)

    # 2. State each chunk leaves behind from a zero start: sum_s exp(sum_{k>s} a_k) dt_s x_s B_s
    suffix = torch.flip(torch.cumsum(torch.flip(a, (-1,)), -1), (-1,))  # sum_{k>=s} a_k
    to_end = torch.exp(F.pad(suffix[..., 1:], (0, 1)))  # (b, c, h, Q) sum_{k>s}, no cancellation
    xw = xdt * to_end.reshape(b, c, g, r, Q, 1)
    states = torch.einsum("bcgrsp,bcgsn->bcgrpn", xw, Bc).reshape(b, c, h, p, n)

    # 3. Linear scan over the chunks: the state entering each chunk
    S_in, S = _pass_states(states, torch.exp(a_cum[..., -1]), S)
    S_in = S_in.view(b, c, g, r, p, n)

    # 4. Off-diagonal blocks: the entering state read out by C, decayed to each position
    y_off = torch.einsum("bcgln,bcgrpn->bcgrlp", Cc, S_in)  # (b, c, g, r, Q, p)
    y = y.add_(y_off.mul_(torch.exp(a_cum).reshape(b, c, g, r, Q, 1)))
    return y.reshape(b, c, h, Q, p).transpose(2, 3).reshape(b, T, h, p), S


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                D: Tensor | None = None, initial_state: Tensor | None = None,
                return_final_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD scan of Mamba-2 (the block decomposition of [1]_, Section 6).

    Computes, for every head, ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T`` and
    ``y_t = S_t C_t + D x_t`` without a loop over time: the sequence is cut into chunks of
    ``chunk_size`` steps; inside a chunk the output is a masked (attention-like) matrix product,
    and the state is passed from chunk to chunk by a linear scan over the chunks (so the cost is
    linear in the length, unlike the quadratic inter-chunk term of the paper's Listing 1).
    When the log-decay inside every chunk of a block of chunks is moderate, the in-chunk decay
    matrix is factored as a rank-one product and all heads of a group share one matrix product
    per chunk; otherwise explicit (Q x Q) decay matrices are built per head. Both forms are
    exact and checked against :func:`ssd_naive`.

    Parameters
    ----------
    x : Tensor, shape (batch, length, heads, headdim)
        Inputs.
    dt : Tensor, shape (batch, length, heads)
        Step sizes, already positive (softplus and bias applied by the caller).
    A : Tensor, shape (heads,)
        Negative decay rates (``-exp(A_log)``).
    B, C : Tensor, shape (batch, length, groups, d_state)
        Input and output projections; ``groups`` divides ``heads`` and head ``i`` uses group
        ``i // (heads // groups)``.
    chunk_size : int
        Chunk length ``Q``; any length works (the last chunk is padded with ``dt = 0``, which
        leaves the state unchanged). A sequence shorter than ``Q`` is one chunk.
    D : Tensor, shape (heads,) or (heads, headdim), optional
        Skip connection ``D x``.
    initial_state : Tensor, shape (batch, heads, headdim, d_state), optional
        State before the first step (zeros when omitted).
    return_final_state : bool
        Also return the state after the last step.

    Returns
    -------
    y : Tensor, shape (batch, length, heads, headdim)
    final_state : Tensor, shape (batch, heads, headdim, d_state)
        Only when ``return_final_state``.
    """
    b, L, h, p, g, n = _check_ssd_inputs(x, dt, A, B, C, chunk_size, D, initial_state)
    out_dtype = x.dtype
    cdt = _compute_dtype(x.dtype)
    x_in = x
    x, dt, A, B, C = (t.to(cdt) for t in (x, dt, A, B, C))
    Q = max(1, min(int(chunk_size), L))
    pad = (-L) % Q
    if pad:  # dt = 0 -> decay 1 and no input: padded steps leave the state untouched
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (L + pad) // Q
    S = (torch.zeros(b, h, p, n, dtype=cdt, device=x.device) if initial_state is None
         else initial_state.to(cdt))
    # Chunks are processed in blocks whose temporaries stay a few MB: the allocator reuses them
    # and they stay in cache (one pass over 100s of MB costs more than the maths). A block uses
    # the factored form when its decays allow it, else the explicit decay matrices.
    per_block = max(1, _BLOCK_ELEMENTS // (b * h * Q * max(Q, p)))
    ys = []
    for k0 in range(0, c, per_block):
        k = min(per_block, c - k0)
        t0, t1 = k0 * Q, (k0 + k) * Q
        blk = (x[:, t0:t1], dt[:, t0:t1], A, B[:, t0:t1], C[:, t0:t1], S, Q, g)
        out = _ssd_block_factored(*blk)
        y_blk, S = out if out is not None else _ssd_block_segsum(*blk)
        ys.append(y_blk)
    y = torch.cat(ys, dim=1)[:, :L] if len(ys) > 1 else ys[0][:, :L]  # (b, L, h, p)
    y = _add_skip(y, x_in.to(cdt), D).to(out_dtype)
    return (y, S.to(out_dtype)) if return_final_state else y


def ssd_naive(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int = 1,
              D: Tensor | None = None, initial_state: Tensor | None = None,
              return_final_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Reference twin of :func:`ssd_chunked`: the recurrence, one time step at a time.

    Vectorised over batch and heads, a Python loop over time. Same arguments and results as
    :func:`ssd_chunked`; ``chunk_size`` is accepted for a common signature and ignored.
    """
    b, L, h, p, g, n = _check_ssd_inputs(x, dt, A, B, C, max(1, int(chunk_size)), D,
                                         initial_state)
    out_dtype, cdt = x.dtype, _compute_dtype(x.dtype)
    x_in = x
    x, dt, A, B, C = (t.to(cdt) for t in (x, dt, A, B, C))
    r = h // g
    Bh = B.repeat_interleave(r, dim=2)  # (b, L, h, n): head i reads group i // r
    Ch = C.repeat_interleave(r, dim=2)[..., None]  # (b, L, h, n, 1)
    dA = torch.exp(dt * A)  # (b, L, h)
    dtx = dt[..., None] * x  # (b, L, h, p)
    S = (torch.zeros(b, h, p, n, dtype=cdt, device=x.device) if initial_state is None
         else initial_state.to(cdt))
    ys = []
    for t in range(L):
        S = S * dA[:, t, :, None, None] + dtx[:, t, :, :, None] * Bh[:, t, :, None, :]
        ys.append((S @ Ch[:, t]).squeeze(-1))  # (b, h, p)
    y = torch.stack(ys, dim=1)  # (b, L, h, p)
    y = _add_skip(y, x_in.to(cdt), D).to(out_dtype)
    return (y, S.to(out_dtype)) if return_final_state else y
