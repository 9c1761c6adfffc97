"""Graph layers over the channel axis: graph attention (GAT) and a static GCN.

Nodes are the channels of one window, input ``h`` of shape ``(B, C, F)``. The default graph is
fully connected (self loops included). Two optional masks restrict it:

- ``adj`` (C, C) or (B, C, C) bool: ``adj[..., i, j]`` is True when node ``i`` may aggregate
  from neighbour ``j``;
- ``ch_mask`` (B, C) bool: True for a real channel, False for padding in a mixed-montage batch.
  Padding channels are never attended to, have an all-zero attention row and a zero output.

References
----------
.. [1] Velickovic, P. et al. (2018). Graph Attention Networks. ICLR.
.. [2] Kipf, T. N. & Welling, M. (2017). Semi-Supervised Classification with Graph
       Convolutional Networks. ICLR.
.. [3] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms", Section III-D2, equations (1)-(3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from workbench.utils import check_option

__all__ = ["GATLayer", "GCNLayer", "edge_mask", "gat_reference"]


def edge_mask(
    B: int,
    C: int,
    adj: torch.Tensor | None = None,
    ch_mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The boolean edge mask ``M[b, i, j]`` = node ``i`` may aggregate from node ``j``.

    ``M = adj & ch_mask[:, :, None] & ch_mask[:, None, :]``, i.e. edges to and from padding
    channels are removed. Shape ``(B, C, C)``.
    """
    m = torch.ones(B, C, C, dtype=torch.bool, device=device)
    if adj is not None:
        adj = adj.to(device=device, dtype=torch.bool)
        if adj.shape[-2:] != (C, C) or adj.dim() not in (2, 3):
            raise ValueError(
                f"Invalid 'adj': expected shape ({C}, {C}) or ({B}, {C}, {C}), got "
                f"{tuple(adj.shape)}."
            )
        m = m & adj
    if ch_mask is not None:
        if tuple(ch_mask.shape) != (B, C):
            raise ValueError(
                f"Invalid 'ch_mask': expected shape ({B}, {C}), got {tuple(ch_mask.shape)}."
            )
        cm = ch_mask.to(device=device, dtype=torch.bool)
        m = m & cm[:, :, None] & cm[:, None, :]
    return m


def _node_output(out: torch.Tensor, bias: torch.Tensor | None, activation: str,
                 ch_mask: torch.Tensor | None) -> torch.Tensor:
    """Bias, activation ("none" or "elu") and zeroed padding channels of a graph layer."""
    if bias is not None:
        out = out + bias
    if activation == "elu":
        out = F.elu(out)
    if ch_mask is not None:
        out = out.masked_fill(~ch_mask.to(torch.bool)[..., None], 0.0)
    return out


class GATLayer(nn.Module):
    """Multi-head graph attention layer, vectorised over the batch.

    For head ``k`` with weights ``W_k`` (D x F) and ``a_k`` (2D):

    - (1) ``e_ij = LeakyReLU(a_k^T [W_k h_i || W_k h_j])``
    - (2) ``alpha_ij = softmax_j(e_ij)`` over the neighbours ``j`` of ``i`` (masked entries are
      excluded, see the module docstring)
    - (3) ``h_i' = sigma(sum_j alpha_ij W_k h_j)``; the heads are concatenated (``concat=True``)
      or averaged.

    ``a_k^T [W h_i || W h_j]`` is computed as ``a_k[:D]^T W h_i + a_k[D:]^T W h_j``, which turns
    the C x C pairwise concatenations into one broadcast sum.

    Parameters
    ----------
    in_dim : int
        Node feature width ``F``.
    out_dim : int
        Output width. With ``concat=True`` it is split over the heads (each head has
        ``out_dim // heads`` features, so ``out_dim`` must be divisible by ``heads``); with
        ``concat=False`` each head has ``out_dim`` features and the heads are averaged.
    heads : int
        Number of attention heads ``K``.
    concat : bool
        Concatenate (True) or average (False) the heads.
    dropout : float
        Dropout on the attention coefficients (training only), as in [1].
    negative_slope : float
        Slope of the LeakyReLU in (1).
    activation : {"none", "elu"}
        The ``sigma`` of (3); "none" leaves it to the caller.
    bias : bool
        Add a learnable bias after aggregation.

    References
    ----------
    .. [1] Velickovic, P. et al. (2018). Graph Attention Networks. ICLR.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        heads: int = 4,
        concat: bool = True,
        dropout: float = 0.0,
        negative_slope: float = 0.2,
        activation: str = "none",
        bias: bool = True,
    ):
        super().__init__()
        if concat and out_dim % heads:
            raise ValueError(
                f"GATLayer: 'out_dim' ({out_dim}) must be divisible by 'heads' "
                f"({heads}) when concat=True."
            )
        check_option("activation", activation, ["none", "elu"])
        self.in_dim, self.out_dim, self.heads, self.concat = in_dim, out_dim, heads, concat
        self.head_dim = out_dim // heads if concat else out_dim
        self.negative_slope = negative_slope
        self.activation = activation
        self.lin = nn.Linear(in_dim, heads * self.head_dim, bias=False)  # W, all heads stacked
        self.att = nn.Parameter(torch.empty(heads, 2 * self.head_dim))  # a_k = [a_src || a_dst]
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.attn_drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self, h: torch.Tensor, adj: torch.Tensor | None = None, ch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(out (B, C, out_dim), attention (B, heads, C, C))``."""
        B, C, _ = h.shape
        H, D = self.heads, self.head_dim
        wh = self.lin(h).view(B, C, H, D)  # (B, C, H, D)
        a_src, a_dst = self.att[:, :D], self.att[:, D:]  # (H, D) each
        s = torch.einsum("bchd,hd->bhc", wh, a_src.to(wh.dtype))  # (B, H, C) node i term
        t = torch.einsum("bchd,hd->bhc", wh, a_dst.to(wh.dtype))  # (B, H, C) neighbour j term
        e = F.leaky_relu(s[..., :, None] + t[..., None, :], self.negative_slope)  # (B, H, C, C)
        mask = None
        if adj is not None or ch_mask is not None:
            mask = edge_mask(B, C, adj, ch_mask, device=h.device)[:, None]  # (B, 1, C, C)
            # A finite fill keeps fully masked rows NaN-free (uniform); they are zeroed below.
            e = e.masked_fill(~mask, torch.finfo(e.dtype).min)
        alpha = torch.softmax(e, dim=-1)
        if mask is not None:
            alpha = alpha.masked_fill(~mask, 0.0)
        out = self.attn_drop(alpha) @ wh.transpose(1, 2)  # (B, H, C, D)
        out = out.transpose(1, 2)  # (B, C, H, D)
        out = out.reshape(B, C, H * D) if self.concat else out.mean(dim=2)
        return _node_output(out, self.bias, self.activation, ch_mask), alpha

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim}, {self.out_dim}, heads={self.heads}, concat={self.concat}, "
            f"negative_slope={self.negative_slope}, activation={self.activation!r}"
        )


def gat_reference(
    h: torch.Tensor,
    weight: torch.Tensor,
    att: torch.Tensor,
    heads: int,
    *,
    bias: torch.Tensor | None = None,
    concat: bool = True,
    negative_slope: float = 0.2,
    adj: torch.Tensor | None = None,
    ch_mask: torch.Tensor | None = None,
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin of :class:`GATLayer`: equations (1)-(3) evaluated literally with loops.

    Parameters
    ----------
    h : Tensor, shape (B, C, F)
    weight : Tensor, shape (heads * D, F)
        The stacked ``W_k`` (``GATLayer.lin.weight``).
    att : Tensor, shape (heads, 2 * D)
        The ``a_k`` (``GATLayer.att``).
    heads, bias, concat, negative_slope
        As in :class:`GATLayer`.
    adj, ch_mask
        Neighbourhoods: ``j`` is a neighbour of ``i`` when ``adj[i, j]`` and both are real.
    activation : callable or None
        ``sigma`` of equation (3).

    Returns
    -------
    out : Tensor, shape (B, C, out_dim)
    attention : Tensor, shape (B, heads, C, C)
    """
    B, C, _ = h.shape
    D = weight.shape[0] // heads
    sigma = activation or (lambda v: v)
    m = edge_mask(B, C, adj, ch_mask, device=h.device)
    out_dim = heads * D if concat else D
    out = torch.zeros(B, C, out_dim, dtype=h.dtype)
    alpha = torch.zeros(B, heads, C, C, dtype=h.dtype)
    for b in range(B):
        for i in range(C):
            if ch_mask is not None and not bool(ch_mask[b, i]):
                continue  # a padding node: no output
            head_outputs = []
            for k in range(heads):
                W = weight[k * D : (k + 1) * D]  # (D, F)
                a = att[k]  # (2D,)
                neighbours = [j for j in range(C) if bool(m[b, i, j])]
                e = {}
                for j in neighbours:
                    z = torch.cat([W @ h[b, i], W @ h[b, j]])  # [W h_i || W h_j]
                    e[j] = F.leaky_relu(a @ z, negative_slope)  # (1)
                denom = sum(torch.exp(e[j]) for j in neighbours)
                agg = torch.zeros(D, dtype=h.dtype)
                for j in neighbours:
                    alpha[b, k, i, j] = torch.exp(e[j]) / denom  # (2)
                    agg = agg + alpha[b, k, i, j] * (W @ h[b, j])
                head_outputs.append(agg)
            hi = torch.cat(head_outputs) if concat else torch.stack(head_outputs).mean(0)
            if bias is not None:
                hi = hi + bias
            out[b, i] = sigma(hi)  # (3)
    return out, alpha


class GCNLayer(nn.Module):
    """Graph convolution with symmetric normalisation on a static (fully connected) graph.

    ``H' = D^{-1/2} A D^{-1/2} H W + b`` where ``A`` is the edge mask (fully connected with self
    loops unless ``adj`` is given, restricted to real channels) and ``D`` its degree matrix. On the
    fully connected graph of ``n`` real channels every edge weight is ``1 / n``, so the layer
    averages the projected features over the real channels: the "static, fixed-edge-weight" graph
    of the One Model for All GCN ablation.

    Parameters
    ----------
    in_dim, out_dim : int
        Feature widths.
    activation : {"none", "elu"}
        Non-linearity after aggregation.
    bias : bool
        Add a learnable bias.

    References
    ----------
    .. [1] Kipf, T. N. & Welling, M. (2017). Semi-Supervised Classification with Graph
           Convolutional Networks. ICLR.
    """

    def __init__(self, in_dim: int, out_dim: int, activation: str = "none", bias: bool = True):
        super().__init__()
        check_option("activation", activation, ["none", "elu"])
        self.in_dim, self.out_dim, self.activation = in_dim, out_dim, activation
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(
        self, h: torch.Tensor, adj: torch.Tensor | None = None, ch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(out (B, C, out_dim), normalised adjacency (B, 1, C, C))``."""
        B, C, _ = h.shape
        a = edge_mask(B, C, adj, ch_mask, device=h.device).to(h.dtype)  # (B, C, C)
        deg = a.sum(-1)  # (B, C)
        inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros_like(deg))
        a_norm = inv_sqrt[:, :, None] * a * inv_sqrt[:, None, :]  # (B, C, C)
        out = a_norm.to(h.dtype) @ self.lin(h)  # (B, C, out_dim)
        return _node_output(out, self.bias, self.activation, ch_mask), a_norm[:, None]

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, activation={self.activation!r}"
