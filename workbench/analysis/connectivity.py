"""Functional connectivity from GAT attention: class-mean matrices, top edges, key channels.

The One Model for All paper draws, per emotion class, the strongest 15 % of the GAT attention
weights on the scalp and marks as key channels those with degree >= 8 in that graph. Attention
``A[i, j]`` is the weight node ``i`` gives to neighbour ``j`` (information flows ``j -> i``).

Arrays in, tidy ``pandas`` tables out, so the figures can be redrawn from saved attention.

References
----------
.. [1] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms", Section IV (GAT attention connectivity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["class_attention", "degree_centrality", "key_channels", "top_edges"]


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def class_attention(
    attention: Any, labels: Sequence[Any], layer: int = -1, symmetrize: bool = False
) -> dict[Any, np.ndarray]:
    """Mean attention matrix of each class, averaged over heads and windows.

    Parameters
    ----------
    attention : array (N, heads, C, C) or (N, C, C), or a list of them (one per GAT layer)
        NumPy arrays or torch tensors.
    labels : sequence, length N
        Class of each window.
    layer : int
        Which layer of a list to use (default: the last).
    symmetrize : bool
        Return ``(A + A.T) / 2`` (undirected connectivity).

    Returns
    -------
    dict
        ``{class: (C, C) array}``, classes in sorted order.
    """
    if isinstance(attention, list | tuple):
        if not attention:
            raise ValueError(
                "class_attention: the attention list is empty (a model without "
                "GAT layers returns none)."
            )
        attention = attention[layer]
    a = _to_numpy(attention)
    if a.ndim == 4:
        a = a.mean(axis=1)  # (N, C, C), mean over heads
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(
            f"class_attention: expected attention of shape (N, heads, C, C) or "
            f"(N, C, C), got {a.shape}."
        )
    labels = np.asarray(labels)
    if labels.shape != (a.shape[0],):
        raise ValueError(
            f"class_attention: 'labels' must have shape ({a.shape[0]},), got {labels.shape}."
        )
    out = {}
    for c in np.unique(labels):
        m = a[labels == c].mean(axis=0)  # (C, C)
        out[c.item() if hasattr(c, "item") else c] = (m + m.T) / 2 if symmetrize else m
    return out


def top_edges(
    matrix: np.ndarray, ch_names: Sequence[str], quantile: float = 0.85, directed: bool = False
) -> pd.DataFrame:
    """The strongest ``1 - quantile`` fraction of the edges of a connectivity matrix.

    Self loops are excluded. Undirected (default): the matrix is symmetrised
    (``(A + A.T) / 2``) and each unordered pair ``i < j`` is one candidate edge; directed: every
    ordered pair ``i != j`` is one. The ``ceil((1 - quantile) * n)`` strongest of the ``n``
    candidates are kept (for distinct weights: those above the ``quantile``-quantile); ties at
    the cut are broken by channel order, so the count never depends on ties (e.g. many zeros).

    Parameters
    ----------
    matrix : array (C, C)
    ch_names : sequence of str, length C
    quantile : float
        0.85 keeps the top 15 %.
    directed : bool
        Keep the direction (``source`` = attending node ``i``, ``target`` = neighbour ``j``).

    Returns
    -------
    DataFrame
        Columns ``source, target, weight, source_idx, target_idx``, strongest first. Undirected
        edges list the lower index as ``source``.
    """
    a = _to_numpy(matrix)
    C = len(ch_names)
    if a.shape != (C, C):
        raise ValueError(
            f"top_edges: expected a ({C}, {C}) matrix for {C} channel names, got {a.shape}."
        )
    if not 0.0 <= quantile < 1.0:
        raise ValueError(
            f"Invalid value for the 'quantile' parameter: expected a value in "
            f"[0, 1), got {quantile!r}."
        )
    if directed:
        i, j = np.nonzero(~np.eye(C, dtype=bool))
    else:
        a = (a + a.T) / 2
        i, j = np.triu_indices(C, k=1)
    w = a[i, j]
    if w.size == 0:
        raise ValueError("top_edges: need at least 2 channels.")
    n_keep = max(1, math.ceil(round((1.0 - quantile) * w.size, 9)))
    keep = np.argsort(-w, kind="stable")[:n_keep]  # strongest first, ties in channel order
    names = np.asarray(ch_names, dtype=object)
    return pd.DataFrame(
        {
            "source": names[i[keep]],
            "target": names[j[keep]],
            "weight": w[keep],
            "source_idx": i[keep],
            "target_idx": j[keep],
        }
    )


def degree_centrality(edges: pd.DataFrame, ch_names: Sequence[str]) -> pd.DataFrame:
    """Degree of every channel in an edge table from :func:`top_edges`.

    The degree counts the edges that touch a channel (as source or target); the centrality is
    the degree divided by ``C - 1`` (the networkx normalisation).

    Returns
    -------
    DataFrame
        Columns ``channel, degree, centrality``, one row per name in ``ch_names`` (in that
        order, channels without edges included).
    """
    names = list(ch_names)
    unknown = sorted(set(edges["source"]).union(edges["target"]) - set(names))
    if unknown:
        raise ValueError(f"degree_centrality: edge channels {unknown} are not in 'ch_names'.")
    deg = pd.concat([edges["source"], edges["target"]]).value_counts()
    degree = np.array([int(deg.get(n, 0)) for n in names])
    return pd.DataFrame(
        {"channel": names, "degree": degree, "centrality": degree / max(len(names) - 1, 1)}
    )


def key_channels(edges: pd.DataFrame, min_degree: int = 8) -> list[str]:
    """Channels with degree >= ``min_degree`` in ``edges``, highest degree first (then name)."""
    deg = pd.concat([edges["source"], edges["target"]]).value_counts()
    hubs = [(name, int(d)) for name, d in deg.items() if d >= min_degree]
    return [name for name, _ in sorted(hubs, key=lambda t: (-t[1], t[0]))]


def attention_significance(attention: Any, labels: Sequence[Any], layer: int = -1,
                           n_permutations: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Does an attention map say anything: how far from uniform, and do classes differ?

    Parameters
    ----------
    attention, labels, layer
        As for :func:`class_attention` (rows of each window's matrix sum to 1 over real
        neighbours).
    n_permutations : int
        Label permutations of the class-difference test.
    seed : int

    Returns
    -------
    dict
        ``kl_from_uniform``: mean over windows and rows of ``KL(row || uniform)`` in nats
        (0 = uniform attention); ``max_min_ratio``: the largest over the smallest weight of the
        mean matrix (1 = uniform); ``class_difference``: the Frobenius norm of the difference of
        the two most frequent classes' mean matrices; ``p_value``: the share of label
        permutations over windows whose difference is at least as large (``(k + 1) / (n + 1)``);
        ``uniform``: whether the mean matrix is within 1 % of uniform everywhere.
    """
    a = attention[layer] if isinstance(attention, list | tuple) else attention
    a = _to_numpy(a)
    if a.ndim == 4:
        a = a.mean(axis=1)  # (N, C, C): mean over heads
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"Invalid value for the 'attention' parameter: expected (N, [heads,] C, "
                         f"C), got shape {a.shape}.")
    labels = np.asarray(labels)
    if len(labels) != len(a):
        raise ValueError(f"{len(labels)} labels for {len(a)} attention matrices.")
    p = np.clip(a, 1e-12, None)
    row_sum = p.sum(-1, keepdims=True)
    p = p / row_sum
    c = a.shape[-1]
    kl = float(np.mean(np.sum(p * np.log(p * c), axis=-1)))
    mean = a.mean(0)
    uniform_w = 1.0 / c
    classes, counts = np.unique(labels, return_counts=True)
    out = {"kl_from_uniform": kl, "max_min_ratio": float(mean.max() / max(mean.min(), 1e-12)),
           "uniform": bool(np.all(np.abs(mean - uniform_w) <= 0.01 * uniform_w)),
           "class_difference": float("nan"), "p_value": float("nan")}
    if len(classes) < 2:
        return out
    c0, c1 = classes[np.argsort(-counts)[:2]]
    keep = np.isin(labels, [c0, c1])
    a2, y2 = a[keep], labels[keep]

    def diff(y: np.ndarray) -> float:
        return float(np.linalg.norm(a2[y == c0].mean(0) - a2[y == c1].mean(0)))

    observed = diff(y2)
    rng = np.random.default_rng(seed)
    hits = sum(diff(rng.permutation(y2)) >= observed for _ in range(n_permutations))
    out.update(class_difference=observed, p_value=(hits + 1) / (n_permutations + 1))
    return out
