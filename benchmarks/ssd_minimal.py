"""The minimal SSD of "Transformers are SSMs" (Listing 1), the benchmark peer of ``ssd_chunked``.

Not a library path: its state passing between chunks is a *quadratic* ``segsum`` over the
chunks, which ``workbench.models.layers.ssd.ssd_chunked`` replaces by a linear scan. It is kept
here, with the library's argument checks and signature, so that ``bench_ssm.py`` can time the
two on the same inputs and ``tests/test_ssm.py`` can check it against the recurrence.

Import it from a script in this folder (``from ssd_minimal import ssd_minimal_listing``) or,
from the repository root, as ``benchmarks.ssd_minimal``.

References
----------
.. [1] T. Dao and A. Gu, "Transformers are SSMs: Generalized models and efficient algorithms
   through structured state space duality", ICML 2024, arXiv:2405.21060, Listing 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The library's shape checks, compute dtype and skip term, so both peers take the same inputs.
from workbench.models.layers.ssd import _add_skip, _check_ssd_inputs, _compute_dtype

__all__ = ["ssd_minimal_listing"]


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
    :func:`workbench.models.layers.ssd.ssd_chunked`.
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

