"""Expert-routing analysis of mixture-of-experts models (Trace): usage, top-k sets, Jaccard.

The input is a tidy table of routing choices, one row per (window, layer, step, channel, slot)
with columns ``dataset, window, layer, step, channel, rank, expert, weight`` (``channel`` is -1
for step-level routing, where one choice serves every channel). :func:`routing_table` builds it
from a model's ``routing`` output for one batch; concatenate the tables of several batches and
datasets with ``pandas.concat``.

From the table: :func:`expert_frequencies` (share of the selections that went to each expert,
per dataset, per layer or pooled over layers), :func:`top_experts` (each dataset's top-k, ties to
the lower expert id), :func:`jaccard_matrix` and :func:`mean_pairwise_jaccard` (``|A n B| /
|A u B|``), :func:`universal_experts` (in every dataset's top-k) and
:func:`task_specific_experts` (in exactly one), :func:`mean_routing_weights` (the data of a
dataset x expert heatmap) and :func:`routing_summary` (all of them).

References
----------
.. [1] "Trace: Temporal Routing with Autoregressive Cross-channel Experts for EEG Representation
       Learning", expert-routing analysis (top-4 experts per dataset, pairwise Jaccard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ROUTING_COLUMNS", "expert_frequencies", "jaccard_matrix", "mean_pairwise_jaccard",
           "mean_routing_weights", "routing_summary", "routing_table", "task_specific_experts",
           "top_experts", "universal_experts"]

ROUTING_COLUMNS = ("dataset", "window", "layer", "step", "channel", "rank", "expert", "weight")


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu()
        a = a.float() if a.is_floating_point() else a
        a = a.numpy()
    return np.asarray(a)


def routing_table(routing: Sequence[Mapping[str, Any]], dataset: str,
                  ch_mask: Any = None, window_ids: Any = None) -> pd.DataFrame:
    """Tidy table of the routing choices of one batch.

    Parameters
    ----------
    routing : list of dict
        A model's ``routing`` output, one dict per MoE layer with ``experts`` and ``weights`` of
        shape (B, N, k) (step-level routing) or (B, N, C, k) (token-wise routing).
    dataset : str
        Value of the ``dataset`` column.
    ch_mask : array (B, C) of bool, optional
        Real channels; rows of padding channels (token-wise routing) are dropped.
    window_ids : array (B,), optional
        Values of the ``window`` column (default ``0 .. B-1``).

    Returns
    -------
    DataFrame
        Columns :data:`ROUTING_COLUMNS`.
    """
    frames = []
    for layer, entry in enumerate(routing):
        experts, weights = _np(entry["experts"]), _np(entry["weights"])
        if experts.shape != weights.shape or experts.ndim not in (3, 4):
            raise ValueError(f"routing_table: layer {layer}: expected 'experts' and 'weights' "
                             f"of one shape (B, N, k) or (B, N, C, k), got {experts.shape} and "
                             f"{weights.shape}.")
        if experts.ndim == 3:
            experts, weights = experts[:, :, None], weights[:, :, None]  # channel axis of 1
            channels = np.array([-1])
        else:
            channels = np.arange(experts.shape[2])
        B, N, C, k = experts.shape
        win = np.arange(B) if window_ids is None else _np(window_ids).reshape(B)
        grid = np.meshgrid(win, np.arange(N), channels, np.arange(k), indexing="ij")
        df = pd.DataFrame({"dataset": dataset, "window": grid[0].ravel(), "layer": layer,
                           "step": grid[1].ravel(), "channel": grid[2].ravel(),
                           "rank": grid[3].ravel(), "expert": experts.ravel().astype(np.int64),
                           "weight": weights.ravel().astype(np.float64)})
        if ch_mask is not None and channels[0] >= 0:
            real = _np(ch_mask).astype(bool)  # (B, C)
            keep = np.broadcast_to(real[:, None, :, None], experts.shape).ravel()
            df = df[keep]
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: [] for c in ROUTING_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def expert_frequencies(table: pd.DataFrame, n_experts: int | None = None,
                       by_layer: bool = False) -> pd.DataFrame:
    """Selection counts and frequencies of every expert, per dataset (and layer).

    Parameters
    ----------
    table : DataFrame
        A routing table (:func:`routing_table`).
    n_experts : int, optional
        Number of experts (default ``max(expert) + 1``); experts never selected get count 0.
    by_layer : bool
        Per layer (a ``layer`` column) or pooled over the layers.

    Returns
    -------
    DataFrame
        ``dataset, [layer,] expert, count, frequency``; ``frequency`` is the count divided by
        the selections of that dataset (and layer), so it sums to 1 per group.
    """
    missing = {"dataset", "expert"} - set(table.columns) | (
        {"layer"} - set(table.columns) if by_layer else set())
    if missing:
        raise ValueError(f"expert_frequencies: the table lacks the columns {sorted(missing)}.")
    E = int(table["expert"].max()) + 1 if n_experts is None else int(n_experts)
    keys = ["dataset", "layer"] if by_layer else ["dataset"]
    counts = table.groupby(keys + ["expert"]).size()
    groups = table[keys].drop_duplicates().sort_values(keys)
    full = pd.MultiIndex.from_tuples(
        [(*g, e) for g in groups.itertuples(index=False) for e in range(E)],
        names=keys + ["expert"])
    out = counts.reindex(full, fill_value=0).rename("count").reset_index()
    out["frequency"] = out["count"] / out.groupby(keys)["count"].transform("sum")
    return out


def top_experts(freq: pd.DataFrame, k: int = 4, layer: int | None = None) -> dict[str, list[int]]:
    """Each dataset's ``k`` most often selected experts (ties: lower expert id first).

    ``freq`` is the output of :func:`expert_frequencies`; with a ``layer`` column pass ``layer``
    to pick one layer (otherwise the table must be pooled).
    """
    if "layer" in freq.columns:
        if layer is None:
            raise ValueError("top_experts: the frequencies are per layer; pass 'layer' or use "
                             "expert_frequencies(..., by_layer=False).")
        freq = freq[freq["layer"] == layer]
    out = {}
    for ds, g in freq.groupby("dataset", sort=True):
        g = g.sort_values(["count", "expert"], ascending=[False, True])
        out[ds] = [int(e) for e in g["expert"].head(k)]
    return out


def jaccard_matrix(top_sets: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """Pairwise Jaccard ``|A n B| / |A u B|`` of the datasets' expert sets (datasets x datasets)."""
    names = list(top_sets)
    sets = {n: set(top_sets[n]) for n in names}
    m = np.ones((len(names), len(names)))
    for i, j in combinations(range(len(names)), 2):
        a, b = sets[names[i]], sets[names[j]]
        m[i, j] = m[j, i] = len(a & b) / len(a | b) if a | b else 1.0
    return pd.DataFrame(m, index=names, columns=names)


def mean_pairwise_jaccard(top_sets: Mapping[str, Sequence[int]]) -> float:
    """Mean Jaccard over the unordered pairs of distinct datasets (NaN for fewer than two)."""
    m = jaccard_matrix(top_sets).to_numpy()
    iu = np.triu_indices(len(m), k=1)
    return float(m[iu].mean()) if len(iu[0]) else float("nan")


def universal_experts(top_sets: Mapping[str, Sequence[int]]) -> list[int]:
    """Experts in every dataset's set, sorted."""
    sets = [set(s) for s in top_sets.values()]
    return sorted(set.intersection(*sets)) if sets else []


def task_specific_experts(top_sets: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """For each dataset, the experts of its set that are in no other dataset's set."""
    out = {}
    for name, s in top_sets.items():
        others = set().union(*(set(v) for n, v in top_sets.items() if n != name))
        out[name] = sorted(set(s) - others)
    return out


def mean_routing_weights(table: pd.DataFrame, n_experts: int | None = None) -> pd.DataFrame:
    """Mean gate weight of every expert per dataset (0 where not selected): datasets x experts.

    Each routing decision (a window, layer, step and channel) contributes its ``k`` weights; the
    sum over the decisions is divided by their number.
    """
    E = int(table["expert"].max()) + 1 if n_experts is None else int(n_experts)
    decision_keys = ["dataset", "window", "layer", "step", "channel"]
    decisions = table.drop_duplicates(decision_keys).groupby("dataset").size()
    sums = table.pivot_table(index="dataset", columns="expert", values="weight", aggfunc="sum",
                             fill_value=0.0).reindex(columns=range(E), fill_value=0.0)
    return sums.div(decisions, axis=0)


def routing_summary(table: pd.DataFrame, k: int = 4, n_experts: int | None = None,
                    layer: int | None = None) -> dict[str, Any]:
    """Top-``k`` sets, Jaccard matrix and mean, universal and task-specific experts.

    Pooled over the layers, or of one ``layer``. Returns a dict with ``frequencies``,
    ``top``, ``jaccard``, ``mean_jaccard``, ``universal`` and ``task_specific``.
    """
    if layer is not None:
        table = table[table["layer"] == layer]
    freq = expert_frequencies(table, n_experts)
    top = top_experts(freq, k)
    return {"frequencies": freq, "top": top, "jaccard": jaccard_matrix(top),
            "mean_jaccard": mean_pairwise_jaccard(top), "universal": universal_experts(top),
            "task_specific": task_specific_experts(top)}
