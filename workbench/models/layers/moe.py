"""Mixture-of-experts layers of Trace: experts, routers, TemporalFormer, CTR-FFN, balance loss.

CTR-FFN (cross-channel temporal routing FFN) on tokens ``x`` (B, N steps, C channels, d)::

    y[b, t, c] = shared(x[b, t, c]) + sum_{i in TopK(b, t)} g_i(b, t) * expert_i(x[b, t, c])

The routing decision of step ``t`` comes from a routing context computed from the causal
cross-channel history (steps ``<= t``, every real channel) and serves every channel of that step.

- ``router="temporal"`` (the paper): :class:`TemporalFormer`, learnable queries attending to all
  channel tokens of steps ``<= t``, pooled over queries, then a feed-forward layer;
- ``router="mean"`` (ablation Mean Temporal): the causal mean of the channel tokens, then the
  same feed-forward layer;
- ``router="token"`` (ablation Vanilla MoE): a linear router on each token (each channel patch
  routed on its own).

Experts are SwiGLU feed-forward layers (**our default**: Table 6 gives SiLU, RMSNorm, RoPE and
KV heads, a Llama-style block). :func:`grouped_experts` sorts the (unit, slot) assignments by
expert and runs each expert once on all of its units (a loop over experts, none over tokens);
:func:`grouped_experts_ref` is the per-unit reference twin. :func:`balance_loss` is the
DeepSeekMoE expert-level balance loss ``E * sum_i f_i P_i``.

References
----------
.. [1] "Trace: Temporal Routing with Autoregressive Cross-channel Experts for EEG Representation
       Learning", Section 2.4 (equations 11-14) and Section 2.5 (equation 17).
.. [2] Dai, D. et al. (2024). DeepSeekMoE: Towards Ultimate Expert Specialization in
       Mixture-of-Experts Language Models. arXiv:2401.06066.
.. [3] Shazeer, N. (2020). GLU Variants Improve Transformer. arXiv:2002.05202.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.utils import check_option

__all__ = ["CTRFFN", "MeanTemporalContext", "SwiGLU", "TemporalFormer", "balance_loss",
           "dense_hidden", "grouped_experts", "grouped_experts_ref"]


class SwiGLU(nn.Module):
    """``W_down(SiLU(W_gate x) * W_up x)``: one expert, the shared expert or the dense FFN."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


# ----------------------------------------------------------------------------- experts
def grouped_experts(x: Tensor, idx: Tensor, gate: Tensor, experts: nn.ModuleList) -> Tensor:
    """Weighted sum of the chosen experts, grouped by expert.

    Parameters
    ----------
    x : Tensor, shape (U, R, d)
        Routing units: a step's ``R = C`` channel tokens (temporal routing) or one token.
    idx : LongTensor, shape (U, k)
        Experts chosen for each unit.
    gate : Tensor, shape (U, k)
        Their weights.
    experts : ModuleList
        ``E`` expert modules acting on the last dimension.

    Returns
    -------
    Tensor, shape (U, R, d)
        ``sum_j gate[u, j] * experts[idx[u, j]](x[u])``.
    """
    U, k = idx.shape
    flat = idx.reshape(-1)  # (U*k,) one entry per (unit, slot)
    order = torch.argsort(flat, stable=True)  # assignments grouped by expert
    counts = torch.bincount(flat, minlength=len(experts)).tolist()
    weights = gate.reshape(-1)[order]  # (U*k,)
    units = order // k  # unit of each sorted assignment
    out = x.new_zeros(x.shape)
    start = 0
    for e, n in enumerate(counts):
        if n == 0 and not torch.is_grad_enabled():
            continue
        # while training, an expert chosen by no unit still runs on an empty batch: its
        # parameters get a zero gradient instead of none (DDP and optimisers see every one)
        sel = units[start:start + n]
        y = experts[e](x[sel]) * weights[start:start + n, None, None]  # (n, R, d)
        out = out.index_add(0, sel, y.to(out.dtype))
        start += n
    return out


def grouped_experts_ref(x: Tensor, idx: Tensor, gate: Tensor, experts: nn.ModuleList) -> Tensor:
    """Reference twin of :func:`grouped_experts`: a loop over units and their slots."""
    rows = []
    for u in range(x.shape[0]):
        acc = torch.zeros_like(x[u])
        for j in range(idx.shape[1]):
            acc = acc + gate[u, j] * experts[int(idx[u, j])](x[u])
        rows.append(acc)
    return torch.stack(rows)


def balance_loss(probs: Tensor, idx: Tensor, valid: Tensor | None = None) -> Tensor:
    """DeepSeekMoE expert-level balance loss ``E * sum_i f_i * P_i``.

    Parameters
    ----------
    probs : Tensor, shape (U, E)
        Routing probabilities (softmax over the experts) of ``U`` routing decisions (steps, or
        tokens for the token-wise router).
    idx : LongTensor, shape (U, k)
        The chosen experts.
    valid : BoolTensor, shape (U,), optional
        Decisions to count (padding tokens excluded).

    Returns
    -------
    Tensor
        Scalar; 1 for perfectly uniform routing. ``f_i`` is the share of the ``U * k`` routing
        slots that went to expert ``i`` (no gradient), ``P_i`` the mean probability of ``i``.
    """
    U, E = probs.shape
    if valid is not None:
        probs, idx = probs[valid], idx[valid]
    n = max(idx.shape[0], 1)
    f = torch.bincount(idx.reshape(-1), minlength=E).to(probs.dtype) / (n * idx.shape[1])
    P = probs.float().sum(0) / n  # (E,)
    return E * (f.detach() * P).sum()


# ----------------------------------------------------------------------------- contexts
class TemporalFormer(nn.Module):
    """Causal routing context: ``n_queries`` learnable queries attend to all channel tokens of
    steps ``<= t`` (eq. 13); the outputs are projected and pooled over the queries (eq. 14, the
    feed-forward layer lives in :class:`CTRFFN`).

    Parameters
    ----------
    d_model, n_queries, n_heads : int
        Width, query tokens (4) and attention heads (**our default** 4 paper, 2 tiny).
    impl : {"fast", "ref"}
        ``"fast"``: the queries do not depend on the step, so the attention scores are computed
        once per token and the causal softmax is a prefix combination of per-step partial sums
        (cost ``O(N C + N^2)`` instead of ``O(N^2 C)``); ``"ref"``: masked attention of ``N *
        n_queries`` queries over the ``N * C`` tokens.

    Notes
    -----
    ``forward(x (B, N, C, d), ch_mask) -> (B, N, d)``; :meth:`step` updates an online-softmax
    state in ``O(C)`` per step.
    """

    def __init__(self, d_model: int, n_queries: int = 4, n_heads: int = 4,
                 impl: str = "fast") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"Invalid value for the 'tf_heads' parameter: d_model={d_model} "
                             f"must divide by it, got {n_heads}.")
        self.impl = check_option("impl", impl, ["fast", "ref"])
        self.n_queries, self.n_heads, self.head_dim = n_queries, n_heads, d_model // n_heads
        self.queries = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        *lead, C, d = x.shape
        kv = self.kv(x).view(*lead, C, 2, self.n_heads, self.head_dim)
        k, v = kv.unbind(-3)  # each (..., C, h, e)
        q = self.queries.view(self.n_queries, self.n_heads, self.head_dim).transpose(0, 1)
        return q * self.head_dim ** -0.5, k, v  # q: (h, Q, e), scaled

    def _scores(self, x: Tensor, ch_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Scores of every token for every (head, query), ``x`` (B, [N,] C, d) ->
        ``s`` (B, [N,] C, h, Q) (padding channels -inf) and ``v`` (B, [N,] C, h, e)."""
        q, k, v = self._qkv(x)
        # The queries do not depend on the input: one matrix product against a block-diagonal
        # (h e, h Q) query matrix scores all tokens, already in the (.., C, h, Q) layout.
        eye = torch.eye(self.n_heads, dtype=q.dtype, device=q.device)
        qmat = torch.einsum("hqe,hg->hegq", q, eye)  # (h, e, h, Q), zero off the diagonal
        s = k.flatten(-2) @ qmat.reshape(-1, self.n_heads * self.n_queries)  # (.., C, h*Q)
        s = s.unflatten(-1, (self.n_heads, self.n_queries)).float()
        if ch_mask is not None:
            shape = (ch_mask.shape[0],) + (1,) * (s.dim() - 4) + (ch_mask.shape[1], 1, 1)
            s = s.masked_fill(~ch_mask.view(shape), float("-inf"))
        return s, v

    def _finish(self, z: Tensor) -> Tensor:
        # z (..., h, Q, e): mean over the queries, heads back to features, projection (linear,
        # so pooling before projecting equals projecting each query and pooling).
        z = z.mean(-2)  # (..., h, e)
        return self.out(z.flatten(-2))  # (..., d)

    def forward(self, x: Tensor, ch_mask: Tensor | None = None) -> Tensor:
        return self._forward_fast(x, ch_mask) if self.impl == "fast" else self.forward_ref(
            x, ch_mask)

    @staticmethod
    def _partial(s: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Softmax partial sums over the channels of each step: ``s`` (.., C, h, Q), ``v``
        (.., C, h, e) -> max ``m`` (.., h, Q), denominator ``l`` (.., h, Q), numerator ``a``
        (.., h, Q, e), all relative to ``m``."""
        m = s.amax(-3)  # finite: every window has a real channel
        p = torch.exp(s - m.unsqueeze(-3))  # (.., C, h, Q)
        a = p.movedim(-3, -1) @ v.float().movedim(-3, -2)  # (.., h, Q, C) @ (.., h, C, e)
        return m, p.sum(-3), a

    def _forward_fast(self, x: Tensor, ch_mask: Tensor | None) -> Tensor:
        N = x.shape[1]
        s, v = self._scores(x, ch_mask)  # (B, N, C, h, Q), (B, N, C, h, e)
        m, l_step, a_step = self._partial(s, v)  # (B, N, h, Q), (B, N, h, Q), (B, N, h, Q, e)
        m, l_step = m.movedim(1, -1), l_step.movedim(1, -1)  # (B, h, Q, N): steps last
        M = torch.cummax(m, dim=-1).values  # running max over steps <= t
        tri = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()  # [t, s]: s <= t
        expo = (m[..., None, :] - M[..., :, None]).masked_fill(~tri, float("-inf"))
        w = torch.exp(expo)  # (B, h, Q, N_t, N_s), <= 1 where s <= t, 0 elsewhere
        denom = (w * l_step[..., None, :]).sum(-1)  # (B, h, Q, N)
        z = (w @ a_step.permute(0, 2, 3, 1, 4)) / denom[..., None]  # (B, h, Q, N, e)
        return self._finish(z.permute(0, 3, 1, 2, 4).to(x.dtype))  # (B, N, h, Q, e) -> (B, N, d)

    def forward_ref(self, x: Tensor, ch_mask: Tensor | None = None) -> Tensor:
        """Reference twin: masked attention of the queries of every step over all tokens."""
        B, N, C, d = x.shape
        q, k, v = self._qkv(x)
        k = k.reshape(B, N * C, self.n_heads, self.head_dim).transpose(1, 2)  # (B, h, N*C, e)
        v = v.reshape(B, N * C, self.n_heads, self.head_dim).transpose(1, 2)
        Q = self.n_queries
        qs = q.repeat(1, N, 1)  # (h, N*Q, e): queries of step t at rows t*Q .. t*Q+Q-1
        step_q = torch.arange(N, device=x.device).repeat_interleave(Q)  # (N*Q,)
        step_k = torch.arange(N, device=x.device).repeat_interleave(C)  # (N*C,)
        mask = (step_k[None, :] <= step_q[:, None])[None, None]  # (1, 1, N*Q, N*C)
        if ch_mask is not None:
            mask = mask & ch_mask.repeat(1, N)[:, None, None, :]  # (B, 1, N*Q, N*C)
        scores = qs @ k.transpose(-2, -1)  # (B, h, N*Q, N*C), q already scaled
        att = torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1)
        z = (att.type_as(v) @ v).view(B, self.n_heads, N, Q, self.head_dim)
        return self._finish(z.permute(0, 2, 1, 3, 4))  # (B, N, d)

    def step(self, x_t: Tensor, state: dict[str, Tensor], ch_mask: Tensor | None = None
             ) -> Tensor:
        """Context of one more step ``x_t`` (B, C, d) -> (B, d), updating the online-softmax
        ``state`` (running max ``m``, denominator ``l``, numerator ``a``)."""
        m_new, l_new, a_new = self._partial(*self._scores(x_t, ch_mask))  # (B, h, Q[, e])
        if "m" in state:
            m = torch.maximum(state["m"], m_new)
            r_old, r_new = torch.exp(state["m"] - m), torch.exp(m_new - m)
            state["l"] = state["l"] * r_old + l_new * r_new
            state["a"] = state["a"] * r_old[..., None] + a_new * r_new[..., None]
            state["m"] = m
        else:
            state.update(m=m_new, l=l_new, a=a_new)
        return self._finish((state["a"] / state["l"][..., None]).to(x_t.dtype))


class MeanTemporalContext(nn.Module):
    """Ablation Mean Temporal: the context of step ``t`` is the mean of the real channel
    tokens of steps ``<= t``."""

    def forward(self, x: Tensor, ch_mask: Tensor | None = None) -> Tensor:
        B, N, C, d = x.shape
        w = (torch.ones(B, C, device=x.device) if ch_mask is None else ch_mask.float())
        num = (x.float() * w[:, None, :, None]).sum(2).cumsum(1)  # (B, N, d)
        den = (w.sum(1)[:, None] * torch.arange(1, N + 1, device=x.device)).clamp(min=1)
        return (num / den[..., None]).to(x.dtype)

    def step(self, x_t: Tensor, state: dict[str, Tensor], ch_mask: Tensor | None = None
             ) -> Tensor:
        B, C, d = x_t.shape
        w = torch.ones(B, C, device=x_t.device) if ch_mask is None else ch_mask.float()
        state["sum"] = state.get("sum", 0) + (x_t.float() * w[..., None]).sum(1)  # (B, d)
        state["n"] = state.get("n", 0) + w.sum(1, keepdim=True)  # (B, 1)
        return (state["sum"] / state["n"].clamp(min=1)).to(x_t.dtype)


# ----------------------------------------------------------------------------- CTR-FFN
class CTRFFN(nn.Module):
    """Cross-channel temporal routing FFN (and its Vanilla / Mean Temporal ablations).

    Parameters
    ----------
    d_model : int
        Token width.
    expert_hidden : int
        Hidden width of every expert and of the shared expert (512 paper).
    n_experts, top_k : int
        Specialised experts ``E`` (16) and experts active per step ``k`` (2).
    n_shared : int
        Always-on shared experts (1; 0 = the "no shared expert" ablation); they form one SwiGLU
        of hidden width ``n_shared * expert_hidden``.
    router : {"temporal", "mean", "token"}
        Routing context, see the module docstring.
    n_queries, tf_heads : int
        TemporalFormer query tokens (4) and heads.
    normalize_topk : bool
        Renormalise the ``k`` chosen probabilities to sum to one (**our default** False: the
        gates are the softmax probabilities, as DeepSeekMoE).
    impl : {"fast", "ref"}
        Grouped experts and prefix TemporalFormer, or their reference twins.

    Notes
    -----
    ``forward(x (B, N, C, d), ch_mask) -> (y (B, N, C, d), info)`` with ``info`` = ``experts``
    (B, N, k) long, ``weights`` (B, N, k), ``probs`` (B, N, E) (token router: (B, N, C, ...))
    and ``balance`` (scalar, :func:`balance_loss`).

    References
    ----------
    .. [1] "Trace", Section 2.4, equations (11)-(14).
    """

    def __init__(self, d_model: int, expert_hidden: int, n_experts: int = 16, top_k: int = 2,
                 n_shared: int = 1, router: str = "temporal", n_queries: int = 4,
                 tf_heads: int = 4, normalize_topk: bool = False, impl: str = "fast") -> None:
        super().__init__()
        self.router_kind = check_option("router", router, ["temporal", "mean", "token"])
        self.impl = check_option("impl", impl, ["fast", "ref"])
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"Invalid value for the 'top_k' parameter: expected 1 <= top_k <= "
                             f"n_experts={n_experts}, got {top_k}.")
        self.n_experts, self.top_k, self.normalize_topk = n_experts, top_k, normalize_topk
        self.experts = nn.ModuleList(SwiGLU(d_model, expert_hidden) for _ in range(n_experts))
        self.shared = SwiGLU(d_model, n_shared * expert_hidden) if n_shared > 0 else None
        if router == "temporal":
            self.context: nn.Module | None = TemporalFormer(d_model, n_queries, tf_heads, impl)
        elif router == "mean":
            self.context = MeanTemporalContext()
        else:
            self.context = None
        if self.context is not None:  # feed-forward layer of eq. (14)
            self.context_ffn = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(),
                                             nn.Linear(d_model, d_model))
        self.router = nn.Linear(d_model, n_experts, bias=False)  # expert selector

    def _route(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = torch.softmax(logits.float(), dim=-1)  # (..., E)
        weights, idx = probs.topk(self.top_k, dim=-1)  # (..., k)
        if self.normalize_topk:
            weights = weights / weights.sum(-1, keepdim=True)
        return probs, weights, idx

    def _experts(self, units: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
        fn = grouped_experts if self.impl == "fast" else grouped_experts_ref
        return fn(units, idx, weights, self.experts)

    def _mix(self, x: Tensor, ctx: Tensor | None, ch_mask: Tensor | None
             ) -> tuple[Tensor, dict[str, Any]]:
        # x (B, L, C, d); ctx (B, L, d) routing contexts (None for the token router).
        B, L, C, d = x.shape
        if self.context is None:  # token-wise router: every channel patch routed on its own
            probs, weights, idx = self._route(self.router(x))  # (B, L, C, E / k)
            flat = x.reshape(B * L * C, 1, d)  # (U, 1, d)
            valid = None if ch_mask is None else ch_mask[:, None, :].expand(B, L, C).reshape(-1)
            keep = torch.arange(flat.shape[0], device=x.device)
            if valid is not None:
                keep = keep[valid]  # padding tokens are not routed
            routed = x.new_zeros(flat.shape).index_copy(
                0, keep, self._experts(flat[keep], idx.reshape(-1, self.top_k)[keep],
                                       weights.reshape(-1, self.top_k)[keep]))
            routed = routed.view(B, L, C, d)
            bal = balance_loss(probs.reshape(-1, self.n_experts), idx.reshape(-1, self.top_k),
                               valid)
        else:
            probs, weights, idx = self._route(self.router(self.context_ffn(ctx)))  # (B, L, .)
            units = x.reshape(B * L, C, d)  # one unit = all channels of one step
            routed = self._experts(units, idx.reshape(B * L, -1),
                                   weights.reshape(B * L, -1)).view(B, L, C, d)
            bal = balance_loss(probs.reshape(B * L, -1), idx.reshape(B * L, -1))
        y = routed if self.shared is None else routed + self.shared(x)
        return y, {"experts": idx, "weights": weights, "probs": probs, "balance": bal}

    def forward(self, x: Tensor, ch_mask: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        ctx = None if self.context is None else self.context(x, ch_mask)  # (B, N, d)
        return self._mix(x, ctx, ch_mask)

    def step(self, x_t: Tensor, state: dict[str, Tensor], ch_mask: Tensor | None = None
             ) -> tuple[Tensor, dict[str, Any]]:
        """One step ``x_t`` (B, C, d) -> ``(y (B, C, d), info)`` (``info`` entries with a
        step axis of length 1); ``state`` carries the routing context."""
        ctx = None if self.context is None else self.context.step(x_t, state, ch_mask)
        y, info = self._mix(x_t[:, None], None if ctx is None else ctx[:, None], ch_mask)
        return y[:, 0], info


def dense_hidden(expert_hidden: int, top_k: int, n_shared: int) -> int:
    """Hidden width of the dense SwiGLU with the active FLOPs of one CTR-FFN token (the Non-MoE
    ablation): ``(top_k + n_shared) * expert_hidden`` (router and context not counted)."""
    return (top_k + n_shared) * expert_hidden
