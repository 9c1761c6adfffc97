"""The answer first: one row per (method, dataset, protocol, variant, mode) of a run's results.

Every results table the drivers write (one row per fold and seed, with ``method``, ``dataset``,
``protocol``, ``variant``, ``mode``, ``fold``, ``seed`` and the metrics) is collected from
``run_dir/tables``; duplicate rows (05_ablations reusing 04_finetune's runs) count once. For each
group: our mean ± std on the method's model-selection metric (the paper's), the DE band-power
baseline on the same folds, the paper's number on the same metric and dataset where the paper
reports one (never for the synthetic corpus), the number of folds whose split can only measure
recording identity, and the notebook the rows come from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ["method", "dataset", "protocol", "variant", "mode"]
ROW_ID = [*KEYS, "fold", "seed"]
BASELINE = "DE baseline"


def _metric(method: str, n_classes: int) -> str:
    try:
        from ..methods import get_method

        return get_method(method).selection_metric(n_classes)
    except ValueError:  # a method that is not registered (any more)
        return "balanced_accuracy"


def _paper(method: str, variant: str, dataset: str, metric: str) -> float:
    try:
        from ..methods import get_method

        table = get_method(method).paper_table()
    except ValueError:
        return np.nan
    hit = table[(table["variant"] == variant) & (table["metric"] == metric)
                & (table["dataset"].str.lower() == dataset.lower())]
    return float(hit["value"].iloc[0]) if len(hit) else np.nan


def collect_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every per-fold results row of ``run_dir/tables``, once, with its ``notebook``."""
    frames = []
    for path in sorted((Path(run_dir) / "tables").glob("*.csv")):
        head = pd.read_csv(path, nrows=0)
        if not set(ROW_ID) <= set(head.columns):
            continue
        df = pd.read_csv(path, dtype={"fold": str, "subject": str})
        frames.append(df.assign(notebook=path.stem.rsplit("__", 1)[0]))  # <notebook>__<name>
    if not frames:
        return pd.DataFrame(columns=[*ROW_ID, "notebook"])
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(subset=ROW_ID, keep="first").reset_index(drop=True)


def results_overview(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (method, dataset, protocol, variant, mode): ``metric``, ``ours_mean``,
    ``ours_std``, ``n`` (folds x seeds), ``baseline_mean`` / ``baseline_std`` (the DE baseline
    on the same folds, when it was run), ``paper``, ``confounded`` (folds) and ``notebook``."""
    rows = collect_results(run_dir)
    out = []
    ours = rows[rows["variant"] != BASELINE]
    for key, g in ours.groupby(KEYS, sort=False):
        method, dataset, protocol, variant, mode = key
        metric = _metric(method, int(g["n_classes"].iloc[0]) if "n_classes" in g else 2)
        if metric not in g:
            continue
        base = rows[(rows["variant"] == BASELINE) & (rows["method"] == method)
                    & (rows["dataset"] == dataset) & (rows["protocol"] == protocol)
                    & rows["fold"].isin(g["fold"]) & rows["seed"].isin(g["seed"])]
        vals = g[metric].astype(float)
        out.append({
            "method": method, "dataset": dataset, "protocol": protocol, "variant": variant,
            "mode": mode, "metric": metric, "ours_mean": vals.mean(), "ours_std": vals.std(),
            "n": int(vals.notna().sum()),
            "baseline_mean": base[metric].astype(float).mean() if len(base) else np.nan,
            "baseline_std": base[metric].astype(float).std() if len(base) else np.nan,
            "paper": _paper(method, variant, dataset, metric),
            "confounded": int(g["confounded"].astype(bool).sum()) if "confounded" in g else 0,
            "notebook": g["notebook"].iloc[0]})
    return pd.DataFrame(out)
