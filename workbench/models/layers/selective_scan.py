"""Selective scan, the scan of Mamba-1, in pure PyTorch: a chunked form and its reference twin.

=====================  ================================================================
fast                   reference
=====================  ================================================================
``selective_scan``     ``selective_scan_ref`` (loop over time)
=====================  ================================================================

Same arguments as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``, so the fused
kernel can stand in for :func:`selective_scan` (see :mod:`workbench.models.layers.mamba_backend`).

References
----------
.. [1] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
   arXiv:2312.00752, 2023.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.models.layers.ssd import _compute_dtype
from workbench.utils import check_positive

__all__ = ["selective_scan", "selective_scan_ref"]


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
