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

__all__ = ["ROUTING_COLUMNS", "cramers_v", "expert_frequencies", "jaccard_matrix",
           "jaccard_permutation", "mean_pairwise_jaccard", "mean_routing_weights",
           "routing_association", "routing_summary", "routing_table", "routing_timeline",
           "task_specific_experts", "top_experts", "universal_experts"]

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


# ----------------------------------------------------------------------------- chance levels
def _unit_counts(table: pd.DataFrame, group: str, units: Sequence[str], n_experts: int | None
                 ) -> tuple[np.ndarray, np.ndarray, list]:
    """Expert counts per unit (n_units, E) and each unit's group code (n_units,)."""
    units = list(units)
    missing = sorted({group, "expert", *units} - set(table.columns))
    if missing:
        raise ValueError(f"The routing table lacks the columns {missing}.")
    E = int(table["expert"].max()) + 1 if n_experts is None else int(n_experts)
    keys = table[units].drop_duplicates().reset_index(drop=True)
    unit = (table[units].merge(keys.reset_index(), on=units, how="left")["index"]
            .to_numpy())  # unit code of every row
    counts = np.zeros((len(keys), E))
    np.add.at(counts, (unit, table["expert"].to_numpy(np.int64)), 1.0)
    per_unit = table.groupby(unit)[group].nunique()
    if (per_unit > 1).any():
        raise ValueError(f"routing_association: column {group!r} varies inside a unit "
                         f"{units}; choose units nested in the groups.")
    first = table.groupby(unit)[group].first().sort_index()
    names = sorted(first.unique(), key=str)
    codes = first.map({g: i for i, g in enumerate(names)}).to_numpy()
    return counts, codes, names


def cramers_v(contingency: np.ndarray) -> float:
    """Cramer's V of a contingency table (rows x columns of counts); 0 = independence.

    Columns or rows that are all zero are left out; NaN for fewer than two of either.
    """
    c = np.asarray(contingency, dtype=float)
    c = c[c.sum(1) > 0][:, c.sum(0) > 0]
    if min(c.shape) < 2:
        return float("nan")
    n = c.sum()
    expected = c.sum(1, keepdims=True) * c.sum(0, keepdims=True) / n
    chi2 = ((c - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / (n * (min(c.shape) - 1))))


def _permutation_p(observed: float, null: np.ndarray, greater: bool) -> float:
    hits = (null >= observed - 1e-12) if greater else (null <= observed + 1e-12)
    return float((1 + hits.sum()) / (1 + len(null)))


def routing_association(table: pd.DataFrame, group: str = "dataset",
                        units: Sequence[str] = ("dataset", "window"),
                        n_permutations: int = 1000, seed: int = 0,
                        n_experts: int | None = None) -> dict[str, float]:
    """Is the expert choice associated with ``group`` above chance? A permutation test.

    The statistic is Cramer's V of the ``group`` x expert table of selection counts; the null
    distribution comes from permuting the group labels across ``units`` (windows by default),
    which keeps every window's routing intact.

    Returns
    -------
    dict
        ``statistic`` (observed V), ``null_mean``, ``null_std``, ``p_value`` (share of
        permutations with a V at least as large, counting the observed one), ``n_units``.
    """
    counts, codes, names = _unit_counts(table, group, units, n_experts)
    G = len(names)

    def v_of(c: np.ndarray) -> float:
        onehot = np.eye(G)[c]  # (n_units, G)
        return cramers_v(onehot.T @ counts)  # (G, E)

    observed = v_of(codes)
    rng = np.random.default_rng(seed)
    null = np.array([v_of(rng.permutation(codes)) for _ in range(n_permutations)])
    return {"statistic": observed, "null_mean": float(null.mean()),
            "null_std": float(null.std()), "p_value": _permutation_p(observed, null, True),
            "n_units": int(len(codes))}


def _top_sets(group_counts: np.ndarray, k: int) -> list[set[int]]:
    # ties to the lower expert id, as top_experts: a stable sort of the negated counts
    order = np.argsort(-group_counts, axis=1, kind="stable")[:, :k]
    return [set(map(int, row)) for row in order]


def _mean_jaccard_sets(sets: list[set[int]]) -> float:
    vals = [len(a & b) / len(a | b) for a, b in combinations(sets, 2) if a | b]
    return float(np.mean(vals)) if vals else float("nan")


def jaccard_permutation(table: pd.DataFrame, k: int = 4, group: str = "dataset",
                        units: Sequence[str] = ("dataset", "window"),
                        n_permutations: int = 1000, seed: int = 0,
                        n_experts: int | None = None) -> dict[str, float]:
    """The mean pairwise Jaccard of the groups' top-``k`` sets against chance.

    Under the null the datasets are exchangeable (labels permuted across windows), so their
    top-``k`` sets tend to coincide: an observed Jaccard well below the null mean says the
    datasets prefer different experts.

    Returns
    -------
    dict
        ``observed``, ``null_mean``, ``null_std``, ``p_lower`` (share of permutations with a
        Jaccard at most the observed one, counting the observed one: small = more
        dataset-specific than chance) and ``n_units``.
    """
    counts, codes, names = _unit_counts(table, group, units, n_experts)
    G = len(names)

    def jac(c: np.ndarray) -> float:
        return _mean_jaccard_sets(_top_sets(np.eye(G)[c].T @ counts, k))

    observed = jac(codes)
    rng = np.random.default_rng(seed)
    null = np.array([jac(rng.permutation(codes)) for _ in range(n_permutations)])
    return {"observed": observed, "null_mean": float(null.mean()),
            "null_std": float(null.std()), "p_lower": _permutation_p(observed, null, False),
            "n_units": int(len(codes))}


def routing_timeline(table: pd.DataFrame, window_start_s: Mapping[int, float], patch_s: float,
                     n_experts: int | None = None, layer: int | None = None) -> pd.DataFrame:
    """Routing weight of every expert over time: time (s) x experts.

    ``window_start_s`` maps the table's ``window`` ids to their start in the recording; step
    ``t`` of a window starts at ``start + t * patch_s``. Weights are summed over the ``k``
    chosen experts of a decision and averaged over layers (or of one ``layer``) and channels.
    """
    if layer is not None:
        table = table[table["layer"] == layer]
    E = int(table["expert"].max()) + 1 if n_experts is None else int(n_experts)
    starts = table["window"].map(dict(window_start_s))
    if starts.isna().any():
        raise ValueError("routing_timeline: windows without a start time: "
                         f"{sorted(table.loc[starts.isna(), 'window'].unique())[:5]}.")
    t = (starts + table["step"] * patch_s).round(6)
    decisions = table.assign(time=t).drop_duplicates(["time", "layer", "channel"]).groupby(
        "time").size()
    sums = (table.assign(time=t)
            .pivot_table(index="time", columns="expert", values="weight", aggfunc="sum",
                         fill_value=0.0)
            .reindex(columns=range(E), fill_value=0.0))
    return sums.div(decisions, axis=0)
