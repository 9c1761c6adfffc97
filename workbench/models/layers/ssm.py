"""State-space layers in pure PyTorch: Mamba-2 (chunked SSD) and Mamba-1 (selective scan).

Both run on the CPU and on any GPU. On a CUDA machine where the optional ``mamba_ssm`` package
imports, ``backend="auto"`` (or ``"cuda"``) hands the same parameters to its fused kernels; the
parameter names and shapes are those of ``mamba_ssm.modules.mamba2.Mamba2`` and
``mamba_ssm.modules.mamba_simple.Mamba``, so state dicts move between the two.

Every fast path has a slow twin that the tests compare against:

=================  ====================================================================
fast               reference
=================  ====================================================================
``ssd_chunked``    ``ssd_naive`` (step-by-step recurrence); ``ssd_minimal_listing`` is
                   the paper's Listing 1, kept as the benchmark peer
``selective_scan`` ``selective_scan_ref`` (loop over time)
``Mamba2.forward`` ``Mamba2.step`` applied token by token
``Mamba1.forward`` ``Mamba1.step`` applied token by token
=================  ====================================================================

Notation (shapes as in ``mamba_ssm``): ``b`` batch, ``L`` length, ``h`` heads, ``p`` head size,
``g`` groups of heads sharing ``B``/``C``, ``n`` state size, ``Q`` chunk length, ``c`` chunks.

References
----------
.. [1] T. Dao and A. Gu, "Transformers are SSMs: Generalized models and efficient algorithms
   through structured state space duality", ICML 2024, arXiv:2405.21060.
.. [2] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
   arXiv:2312.00752, 2023.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from workbench.utils import check_option, check_positive

logger = logging.getLogger("workbench")

__all__ = [
    "GatedRMSNorm",
    "Mamba1",
    "Mamba2",
    "mamba_ssm_available",
    "selective_scan",
    "selective_scan_ref",
    "ssd_chunked",
    "ssd_minimal_listing",
    "ssd_naive",
]

BACKENDS = ("auto", "torch", "cuda")


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


def _segsum_stable(a: Tensor) -> Tensor:
    """Listing 1's ``segsum``: pairwise segment sums by a masked cumulative sum (no cancellation).

    ``(..., T) -> (..., T, T)``, ``-inf`` above the diagonal.
    """
    T = a.shape[-1]
    strict = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    seg = a[..., None].expand(*a.shape, T).masked_fill(~strict, 0.0)  # (..., T, T)
    seg = torch.cumsum(seg, dim=-2)
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
    return seg.masked_fill(~causal, float("-inf"))


def ssd_minimal_listing(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                        D: Tensor | None = None, initial_state: Tensor | None = None,
                        return_final_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The paper's minimal SSD (Listing 1 of [1]_), re-implemented as the benchmark peer.

    Same algorithm as the listing: four-operand ``einsum`` for the diagonal blocks, the stable
    ``segsum`` for the in-chunk decays and a *quadratic* ``segsum`` over chunks for the state
    passing. Only one group (``B.shape[2] == 1``) as in the listing; lengths that are not a
    multiple of ``chunk_size`` are padded with ``dt = 0``. Same signature as
    :func:`ssd_chunked`.
    """
    b, L, h, p, g, n = _check_ssd_inputs(x, dt, A, B, C, chunk_size, D, initial_state)
    if g != 1:
        raise ValueError(f"ssd_minimal_listing follows Listing 1 and supports one group; "
                         f"got {g} groups in 'B'/'C'.")
    out_dtype, cdt = x.dtype, _compute_dtype(x.dtype)
    x_in = x
    x, dt, A, B, C = (t.to(cdt) for t in (x, dt, A, B, C))
    Q = int(chunk_size)
    pad = (-L) % Q
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (L + pad) // Q
    # The listing's discrete inputs: X = x dt, A = A dt
    X = (x * dt[..., None]).reshape(b, c, Q, h, p)  # (b, c, l, h, p)
    Ad = (dt * A).reshape(b, c, Q, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    Bk = B.reshape(b, c, Q, g, n)
    Ck = C.reshape(b, c, Q, g, n)
    A_cum = torch.cumsum(Ad, dim=-1)

    Lmat = torch.exp(_segsum_stable(Ad))  # (b, h, c, l, s)
    y_diag = torch.einsum("bclgn,bcsgn,bhcls,bcshp->bclhp", Ck, Bk, Lmat, X)

    decay_states = torch.exp(A_cum[..., -1:] - A_cum)  # (b, h, c, l)
    states = torch.einsum("bclgn,bhcl,bclhp->bcghpn", Bk, decay_states, X)
    init = (torch.zeros_like(states[:, :1]) if initial_state is None
            else initial_state.to(cdt)[:, None, None])  # (b, 1, g, h, p, n)
    states = torch.cat([init, states], dim=1)  # (b, c + 1, g, h, p, n)
    decay_chunk = torch.exp(_segsum_stable(F.pad(A_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    new_states = torch.einsum("bhzc,bcghpn->bzghpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]

    y_off = torch.einsum("bclgn,bcghpn,bhcl->bclhp", Ck, states, torch.exp(A_cum))
    y = (y_diag + y_off).reshape(b, c * Q, h, p)[:, :L]
    y = _add_skip(y, x_in.to(cdt), D).to(out_dtype)
    return (y, final[:, 0].to(out_dtype)) if return_final_state else y


# ============================================================================ Mamba-1 scans
def _scan_prologue(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   delta_bias: Tensor | None, delta_softplus: bool):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"Invalid shapes for 'u'/'delta': expected both (batch, dim, length), "
                         f"got {tuple(u.shape)} and {tuple(delta.shape)}.")
    b, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"Invalid shape for 'A': expected ({d}, d_state), got {tuple(A.shape)}.")
    n = A.shape[1]
    cdt = _compute_dtype(u.dtype)
    delta = delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bx = _expand_bc(B, "B", b, d, n, L).to(cdt)
    Cx = _expand_bc(C, "C", b, d, n, L).to(cdt)
    return b, d, L, n, cdt, delta, Bx, Cx


def _expand_bc(M: Tensor, name: str, b: int, d: int, n: int, L: int) -> Tensor:
    """``B``/``C`` in any of mamba_ssm's layouts -> a tensor broadcastable to (b, d, L, n)."""
    if M.dim() == 2 and tuple(M.shape) == (d, n):  # time-invariant
        return M[None, :, None, :]  # (1, d, 1, n)
    if M.dim() == 3 and tuple(M.shape) == (b, n, L):  # one shared by all channels
        return M.transpose(1, 2)[:, None]  # (b, 1, L, n)
    if M.dim() == 4 and M.shape[0] == b and tuple(M.shape[2:]) == (n, L) and d % M.shape[1] == 0:
        return M.repeat_interleave(d // M.shape[1], dim=1).transpose(2, 3)  # (b, d, L, n)
    raise ValueError(f"Invalid shape for '{name}': expected ({d}, {n}), ({b}, {n}, {L}) or "
                     f"({b}, groups, {n}, {L}) with groups dividing {d}, got {tuple(M.shape)}.")


def _scan_epilogue(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(u.dtype)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None, z: Tensor | None = None,
                   delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False, chunk_size: int | None = None
                   ) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan in PyTorch, chunked (a loop of ``~2 sqrt(L)`` steps, not ``L``).

    Per channel ``d`` and state ``k``: ``s_t = exp(delta_t A[d, k]) s_{t-1} +
    delta_t B_t[k] u_t`` and ``y_t = sum_k C_t[k] s_t[k] + D u_t``, gated by ``silu(z)``.
    The sequence is cut into chunks; a loop over in-chunk positions (all chunks at once) builds
    the states from a zero start, a loop over chunks carries the true state in, and every
    in-chunk state is corrected by the decay since its chunk start. Only multiplications by
    decays ``<= 1`` occur, so it is as stable as the step-by-step loop.

    Parameters
    ----------
    u, delta : Tensor, shape (batch, dim, length)
    A : Tensor, shape (dim, d_state)
    B, C : Tensor, shape (dim, d_state), (batch, d_state, length) or
        (batch, groups, d_state, length)
    D : Tensor, shape (dim,), optional
    z : Tensor, shape (batch, dim, length), optional
        Gate: the output is multiplied by ``silu(z)``.
    delta_bias : Tensor, shape (dim,), optional
    delta_softplus : bool
        Apply softplus to ``delta + delta_bias``.
    return_last_state : bool
        Also return the state after the last step, shape (batch, dim, d_state).
    chunk_size : int, optional
        Chunk length; ``ceil(sqrt(length))`` when omitted.
    """
    b, d, L, n, cdt, delta, Bx, Cx = _scan_prologue(u, delta, A, B, C, delta_bias,
                                                    delta_softplus)
    Q = int(chunk_size) if chunk_size else max(1, math.isqrt(max(L - 1, 0)) + 1)
    check_positive("chunk_size", Q)
    pad = (-L) % Q
    c = (L + pad) // Q
    log_dA = delta[..., None] * A.to(cdt)[:, None, :]  # (b, d, L, n)
    dBu = (delta * u.to(cdt))[..., None] * Bx  # (b, d, L, n)
    if pad:  # log-decay 0 and no input: padded steps keep the state
        log_dA = F.pad(log_dA, (0, 0, 0, pad))
        dBu = F.pad(dBu, (0, 0, 0, pad))
    log_dA = log_dA.view(b, d, c, Q, n)
    dBu = dBu.view(b, d, c, Q, n)
    dA = torch.exp(log_dA)

    # 1. in-chunk states from a zero start, all chunks at once
    s = torch.zeros(b, d, c, n, dtype=cdt, device=u.device)
    local = []
    for q in range(Q):
        s = dA[:, :, :, q] * s + dBu[:, :, :, q]
        local.append(s)
    local_states = torch.stack(local, dim=3)  # (b, d, c, Q, n)
    since_start = torch.exp(torch.cumsum(log_dA, dim=3))  # (b, d, c, Q, n) decay from chunk start

    # 2. linear scan over chunks: the state entering each chunk
    carry = torch.zeros(b, d, n, dtype=cdt, device=u.device)
    entering = []
    for k in range(c):
        entering.append(carry)
        carry = since_start[:, :, k, -1] * carry + local_states[:, :, k, -1]
    states = local_states + since_start * torch.stack(entering, dim=2)[:, :, :, None]
    states = states.reshape(b, d, c * Q, n)[:, :, :L]  # (b, d, L, n)
    y = (states * Cx).sum(-1)  # (b, d, L)
    out = _scan_epilogue(y, u, D, z)
    return (out, carry.to(u.dtype)) if return_last_state else out


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Tensor | None = None, z: Tensor | None = None,
                       delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Reference twin of :func:`selective_scan`: a loop over every time step."""
    b, d, L, n, cdt, delta, Bx, Cx = _scan_prologue(u, delta, A, B, C, delta_bias,
                                                    delta_softplus)
    dA = torch.exp(delta[..., None] * A.to(cdt)[:, None, :])  # (b, d, L, n)
    dBu = (delta * u.to(cdt))[..., None] * Bx  # (b, d, L, n)
    Cx = Cx.expand(b, d, L, n)
    s = torch.zeros(b, d, n, dtype=cdt, device=u.device)
    ys = []
    for t in range(L):
        s = dA[:, :, t] * s + dBu[:, :, t]
        ys.append((s * Cx[:, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)  # (b, d, L)
    out = _scan_epilogue(y, u, D, z)
    return (out, s.to(u.dtype)) if return_last_state else out


# ============================================================================ optional kernels
_KERNELS: dict[str, Any] = {}


def _kernel(name: str):
    """Import one ``mamba_ssm`` kernel lazily; ``None`` when the package does not import."""
    if name not in _KERNELS:
        try:
            if name == "mamba2":
                import causal_conv1d  # noqa: F401  (the fused path convolves with it)
                from mamba_ssm.ops.triton.ssd_combined import (
                    mamba_split_conv1d_scan_combined as fn,
                )
            else:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as fn
        except Exception as err:  # ImportError, or CUDA/Triton errors at import time
            logger.debug("mamba_ssm kernel %r unavailable: %s", name, err)
            fn = None
        _KERNELS[name] = fn
    return _KERNELS[name]


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm``'s fused Mamba-2 and Mamba-1 kernels import on this machine."""
    return _kernel("mamba2") is not None and _kernel("mamba1") is not None


def _use_kernel(backend: str, name: str, u: Tensor, d_conv: int = 4) -> bool:
    if backend == "torch":
        return False
    available = _kernel(name) is not None and (name != "mamba2" or 2 <= d_conv <= 4)
    if backend == "cuda":
        if not u.is_cuda:
            raise ValueError(f"Invalid value for the 'backend' parameter: 'cuda' needs the input "
                             f"on a CUDA device, got a tensor on {u.device}; use 'auto'.")
        if not available:
            raise ImportError("backend='cuda' needs the optional 'mamba_ssm' and 'causal_conv1d' "
                              "packages (pip install 'workbench[gpu]') and, for Mamba-2, "
                              f"2 <= d_conv <= 4 (got {d_conv}). Use backend='auto'.")
        return True
    return u.is_cuda and available


def _inverse_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    # dt log-uniform in [dt_min, dt_max], floored; the bias is softplus^-1(dt).
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


# ============================================================================ modules
class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate, as ``mamba_ssm.ops.triton.layernorm_gated.RMSNorm``.

    ``norm_before_gate=False`` (Mamba-2's choice): ``rmsnorm(x * silu(z)) * weight``, the
    RMS taken over groups of ``group_size`` features.
    """

    def __init__(self, d: int, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.group_size = group_size or d
        if d % self.group_size:
            raise ValueError(f"Invalid value for the 'group_size' parameter: {group_size} must "
                             f"divide the width {d}.")
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        dtype = x.dtype
        cdt = _compute_dtype(dtype)
        x = x.to(cdt)
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.to(cdt))
        xg = x.view(*x.shape[:-1], -1, self.group_size)  # (..., groups, group_size)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        out = xg.view(x.shape) * self.weight.to(cdt)
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.to(cdt))
        return out.to(dtype)


class Mamba2(nn.Module):
    """Mamba-2 mixer (SSD) with the parameter layout of ``mamba_ssm.modules.mamba2.Mamba2``.

    ``in_proj`` -> split into ``z, xBC, dt`` -> causal depthwise ``conv1d`` + SiLU on ``xBC``
    -> SSD scan over heads -> gated RMSNorm with ``z`` -> ``out_proj``.

    Parameters
    ----------
    d_model : int
        Input/output width.
    d_state : int
        State size ``N`` per head.
    d_conv : int
        Width of the causal depthwise convolution.
    expand : int
        ``d_inner = expand * d_model``.
    headdim : int
        Head size ``P``; ``d_inner / headdim`` heads.
    ngroups : int
        Groups of heads sharing ``B`` and ``C``.
    chunk_size : int
        SSD chunk length.
    backend : {"auto", "torch", "cuda"}
        ``"auto"`` uses ``mamba_ssm``'s fused kernel when it imports and the input is on CUDA,
        the pure-PyTorch scan otherwise; ``"cuda"`` requires the kernel; ``"torch"`` never uses
        it.
    A_init_range, dt_min, dt_max, dt_init_floor, bias, conv_bias
        Initialisation and bias options, as in ``mamba_ssm``.

    References
    ----------
    .. [1] T. Dao and A. Gu, "Transformers are SSMs", ICML 2024, arXiv:2405.21060.
    """

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, chunk_size: int = 256,
                 backend: str = "auto", A_init_range: tuple[float, float] = (1.0, 16.0),
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 bias: bool = False, conv_bias: bool = True) -> None:
        super().__init__()
        self.backend = check_option("backend", backend, BACKENDS)
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.expand, self.headdim, self.ngroups = expand, headdim, ngroups
        self.chunk_size = int(check_positive("chunk_size", chunk_size))
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"Invalid value for the 'headdim' parameter: {headdim} must divide "
                             f"d_inner = expand * d_model = {self.d_inner}.")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"Invalid value for the 'ngroups' parameter: {ngroups} must divide "
                             f"the {self.nheads} heads.")
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"Invalid value for the 'A_init_range' parameter: expected "
                             f"0 < low <= high, got {A_init_range!r}.")
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        # in_proj output order: [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads,
                                 bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=d_conv,
                                groups=self.conv_dim, padding=d_conv - 1, bias=conv_bias)
        self.act = nn.SiLU()
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(self.nheads, dt_min, dt_max,
                                                         dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(lo, hi)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups,
                                 norm_before_gate=False)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (f"d_state={self.d_state}, d_conv={self.d_conv}, headdim={self.headdim}, "
                f"nheads={self.nheads}, ngroups={self.ngroups}, chunk_size={self.chunk_size}, "
                f"backend={self.backend!r}")

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        """``u`` (batch, length, d_model) -> (batch, length, d_model)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Invalid shape for the Mamba2 input: expected (batch, length, "
                             f"{self.d_model}), got {tuple(u.shape)}.")
        b, L, _ = u.shape
        zxbcdt = self.in_proj(u)  # (b, L, 2 d_inner + 2 g n + h)
        A = -torch.exp(self.A_log.float())  # (h,)
        if _use_kernel(self.backend, "mamba2", u, self.d_conv):
            return _kernel("mamba2")(
                zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, A,
                D=self.D, chunk_size=self.chunk_size, activation="silu",
                rmsnorm_weight=self.norm.weight, rmsnorm_eps=self.norm.eps,
                outproj_weight=self.out_proj.weight, outproj_bias=self.out_proj.bias,
                headdim=self.headdim, ngroups=self.ngroups, norm_before_gate=False)
        z, xBC, dt = self._split(zxbcdt)
        xBC = self.act(self.conv1d(xBC.transpose(1, 2))[..., :L]).transpose(1, 2)  # causal
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state,
                                    self.ngroups * self.d_state], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (b, L, h)
        y = ssd_chunked(x.reshape(b, L, self.nheads, self.headdim), dt, A,
                        B.reshape(b, L, self.ngroups, self.d_state),
                        C.reshape(b, L, self.ngroups, self.d_state),
                        self.chunk_size, D=self.D)  # (b, L, h, p)
        y = self.norm(y.reshape(b, L, self.d_inner), z)
        return self.out_proj(y)

    def allocate_state(self, batch: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Zero streaming state: ``(conv_state (batch, conv_dim, d_conv), ssm_state (batch,
        nheads, headdim, d_state))``."""
        device = device if device is not None else self.out_proj.weight.device
        dtype = dtype or self.out_proj.weight.dtype
        return (torch.zeros(batch, self.conv_dim, self.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device,
                            dtype=_compute_dtype(dtype)))

    def step(self, u_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One streaming step: ``u_t`` (batch, d_model) or (batch, 1, d_model).

        Returns the output with the shape of ``u_t`` and the new state (the old one is not
        modified). Applied over a sequence from :meth:`allocate_state` it equals
        :meth:`forward`.
        """
        squeeze = u_t.dim() == 3
        if squeeze:
            u_t = u_t[:, 0]
        conv_state, ssm_state = state
        b = u_t.shape[0]
        z, xBC, dt = self._split(self.in_proj(u_t))  # (b, d_inner), (b, conv_dim), (b, h)
        conv_state = torch.cat([conv_state[:, :, 1:], xBC[:, :, None].to(conv_state.dtype)], -1)
        xBC = (conv_state * self.conv1d.weight[:, 0]).sum(-1)  # (b, conv_dim)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias
        xBC = self.act(xBC)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state,
                                    self.ngroups * self.d_state], dim=-1)
        r = self.nheads // self.ngroups
        cdt = ssm_state.dtype
        dt = F.softplus(dt + self.dt_bias).to(cdt)  # (b, h)
        A = -torch.exp(self.A_log.to(cdt))
        x = x.reshape(b, self.nheads, self.headdim).to(cdt)  # (b, h, p)
        B = B.reshape(b, self.ngroups, self.d_state).repeat_interleave(r, 1).to(cdt)  # (b, h, n)
        C = C.reshape(b, self.ngroups, self.d_state).repeat_interleave(r, 1).to(cdt)  # (b, h, n)
        ssm_state = (ssm_state * torch.exp(dt * A)[..., None, None]
                     + (dt[..., None] * x)[..., None] * B[:, :, None, :])  # (b, h, p, n)
        y = (ssm_state @ C[..., None]).squeeze(-1) + self.D.to(cdt)[:, None] * x  # (b, h, p)
        y = self.norm(y.reshape(b, self.d_inner).to(u_t.dtype), z)
        out = self.out_proj(y)
        return (out[:, None] if squeeze else out), (conv_state, ssm_state)


class Mamba1(nn.Module):
    """Mamba-1 mixer with the parameter layout of ``mamba_ssm.modules.mamba_simple.Mamba``.

    ``in_proj`` -> ``x, z`` -> causal depthwise ``conv1d`` + SiLU on ``x`` -> ``x_proj`` gives
    ``dt`` (low rank), ``B``, ``C`` -> ``dt_proj`` -> selective scan gated by ``silu(z)`` ->
    ``out_proj``.

    Parameters
    ----------
    d_model : int
        Input/output width.
    d_state : int
        State size per channel.
    d_conv : int
        Width of the causal depthwise convolution.
    expand : int
        ``d_inner = expand * d_model``.
    dt_rank : int or "auto"
        Rank of the ``dt`` projection; ``ceil(d_model / 16)`` for ``"auto"``.
    backend : {"auto", "torch", "cuda"}
        As for :class:`Mamba2` (``mamba_ssm``'s ``selective_scan_fn``).
    dt_min, dt_max, dt_init_floor, dt_scale, conv_bias, bias
        Initialisation and bias options, as in ``mamba_ssm``.

    References
    ----------
    .. [1] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
       arXiv:2312.00752, 2023.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", backend: str = "auto", dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0,
                 conv_bias: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.backend = check_option("backend", backend, BACKENDS)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv,
                                groups=self.d_inner, padding=d_conv - 1, bias=conv_bias)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank ** -0.5 * dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(_inverse_softplus_dt(self.d_inner, dt_min, dt_max,
                                                         dt_init_floor))
        # S4D-real initialisation: A[d, k] = -(k + 1)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, d_state)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        for p in (self.A_log, self.D):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (f"d_state={self.d_state}, d_conv={self.d_conv}, dt_rank={self.dt_rank}, "
                f"backend={self.backend!r}")

    def forward(self, u: Tensor) -> Tensor:
        """``u`` (batch, length, d_model) -> (batch, length, d_model)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Invalid shape for the Mamba1 input: expected (batch, length, "
                             f"{self.d_model}), got {tuple(u.shape)}.")
        L = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, L, d_inner) each
        x = self.act(self.conv1d(x.transpose(1, 2))[..., :L])  # (b, d_inner, L), causal
        dt, B, C = torch.split(self.x_proj(x.transpose(1, 2)),
                               [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (b, d_inner, L); bias in the scan
        B = B.transpose(1, 2).contiguous()  # (b, n, L)
        C = C.transpose(1, 2).contiguous()  # (b, n, L)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        scan = _kernel("mamba1") if _use_kernel(self.backend, "mamba1", u) else selective_scan
        y = scan(x.contiguous(), dt.contiguous(), A, B, C, self.D.float(),
                 z=z.transpose(1, 2).contiguous(), delta_bias=self.dt_proj.bias.float(),
                 delta_softplus=True)  # (b, d_inner, L)
        return self.out_proj(y.transpose(1, 2))

    def allocate_state(self, batch: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Zero streaming state: ``(conv_state (batch, d_inner, d_conv), ssm_state (batch,
        d_inner, d_state))``."""
        device = device if device is not None else self.out_proj.weight.device
        dtype = dtype or self.out_proj.weight.dtype
        return (torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, self.d_inner, self.d_state, device=device,
                            dtype=_compute_dtype(dtype)))

    def step(self, u_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One streaming step; see :meth:`Mamba2.step`."""
        squeeze = u_t.dim() == 3
        if squeeze:
            u_t = u_t[:, 0]
        conv_state, ssm_state = state
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (b, d_inner) each
        conv_state = torch.cat([conv_state[:, :, 1:], x[:, :, None].to(conv_state.dtype)], -1)
        x = (conv_state * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = self.act(x)  # (b, d_inner)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], -1)
        cdt = ssm_state.dtype
        dt = F.softplus(self.dt_proj(dt)).to(cdt)  # (b, d_inner)
        A = -torch.exp(self.A_log.to(cdt))  # (d_inner, n)
        ssm_state = (ssm_state * torch.exp(dt[..., None] * A)
                     + (dt * x.to(cdt))[..., None] * B.to(cdt)[:, None, :])  # (b, d_inner, n)
        y = (ssm_state * C.to(cdt)[:, None, :]).sum(-1) + self.D.to(cdt) * x.to(cdt)
        y = (y * F.silu(z.to(cdt))).to(u_t.dtype)
        out = self.out_proj(y)
        return (out[:, None] if squeeze else out), (conv_state, ssm_state)
