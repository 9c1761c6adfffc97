"""Classification metrics and mean ± std tables over subjects, folds and seeds.

The methods report accuracy (One Model for All), balanced accuracy, Cohen's kappa and weighted
F1 for multi-class tasks, balanced accuracy, AUROC and AUC-PR for binary ones (Trace, STELAR,
EEGM2), each as a mean and standard deviation over subjects, folds or seeds.

References
----------
.. [1] Cohen, "A Coefficient of Agreement for Nominal Scales", Educational and Psychological
   Measurement 20(1), 1960.
.. [2] Brodersen et al., "The Balanced Accuracy and Its Posterior Distribution", ICPR 2010.
.. [3] Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 12, 2011.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from ..utils import get_logger

logger = get_logger("evaluation")

ID_COLUMNS = ("subject", "session", "fold", "seed", "run", "epoch", "step", "index", "window_id",
              "n_classes", "n_train", "n_val", "n_test")


def _quiet(name: str, fn: Callable[..., float], *args: Any, **kwargs: Any) -> float:
    """Call a scikit-learn metric; its warnings become one ``workbench`` log warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(fn(*args, **kwargs))
    for w in caught:
        logger.warning("%s: %s", name, w.message)
    return value


def _as_labels(y: np.ndarray, name: str) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(f"Invalid value for the '{name}' parameter: expected shape (N,), got "
                         f"{y.shape}.")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"Invalid value for the '{name}' parameter: expected integer class "
                             f"labels, got non-integer values such as {y[y != np.round(y)][:3]}.")
        y = y.astype(np.int64)
    return y


def classification_metrics(y_true: Sequence[int] | np.ndarray,
                           y_prob_or_pred: Sequence[Any] | np.ndarray,
                           labels: Sequence[int] | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy, Cohen's kappa, weighted F1 and, from probabilities, AUROC
    and AUC-PR.

    Parameters
    ----------
    y_true : array, shape (N,)
        Integer class labels.
    y_prob_or_pred : array, shape (N, K) or (N,)
        Class probabilities (or scores) with columns in the order of ``labels``; or predicted
        labels (integers); or, for a binary task, the positive-class probability as a float
        array with non-integer values.
    labels : sequence of int, optional
        The classes. Default: ``0..K-1`` for probabilities, else the sorted union of the labels
        in ``y_true`` and the predictions.

    Returns
    -------
    metrics : dict of str to float
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in
        ``y_true``), ``cohen_kappa``, ``f1_weighted`` and, when probabilities are given,
        ``auroc`` and ``auc_pr``: for two classes those of the positive class (``labels[1]``;
        AUC-PR = average precision), for more the one-vs-rest macro averages. A value that is
        undefined for the data (e.g. AUROC with a class absent from ``y_true``, kappa when both
        raters use one class) is NaN and a warning is logged.
    """
    y_true = _as_labels(np.asarray(y_true).ravel(), "y_true")
    s = np.asarray(y_prob_or_pred)
    n = y_true.shape[0]
    if n == 0:
        raise ValueError("Invalid value for the 'y_true' parameter: no sample.")
    if s.shape[0] != n:
        raise ValueError(f"Invalid value for the 'y_prob_or_pred' parameter: expected {n} rows "
                         f"(as y_true), got shape {s.shape}.")
    probs: np.ndarray | None = None
    if s.ndim == 2:
        probs = s.astype(np.float64)
        lab = np.arange(probs.shape[1]) if labels is None else np.asarray(labels)
        if lab.shape[0] != probs.shape[1] or probs.shape[1] < 2:
            raise ValueError(f"Invalid value for the 'labels' parameter: {probs.shape[1]} "
                             f"probability columns need as many labels (>= 2), got {list(lab)}.")
        y_pred = lab[np.argmax(probs, axis=1)]
    elif s.ndim == 1 and s.dtype.kind == "f" and not np.all(s == np.round(s)):
        p1 = s.astype(np.float64)
        probs = np.stack([1.0 - p1, p1], axis=1)  # (N, 2)
        lab = np.array([0, 1]) if labels is None else np.asarray(labels)
        if lab.shape[0] != 2:
            raise ValueError("Invalid value for the 'labels' parameter: a 1-D probability array "
                             f"means a binary task, got labels {list(lab)}.")
        y_pred = lab[(p1 >= 0.5).astype(np.int64)]
    else:
        y_pred = _as_labels(s.ravel(), "y_prob_or_pred")
        lab = (np.unique(np.concatenate([y_true, y_pred])) if labels is None
               else np.asarray(labels))
    unknown = np.setdiff1d(np.unique(y_true), lab)
    if unknown.size:
        raise ValueError(f"Invalid value for the 'y_true' parameter: labels {unknown.tolist()} are "
                         f"not among the classes {lab.tolist()}.")
    lab_list = lab.tolist()
    out = {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": _quiet("balanced_accuracy", skm.balanced_accuracy_score,
                                    y_true, y_pred),
        "cohen_kappa": _quiet("cohen_kappa", skm.cohen_kappa_score, y_true, y_pred,
                              labels=lab_list),
        "f1_weighted": _quiet("f1_weighted", skm.f1_score, y_true, y_pred, labels=lab_list,
                              average="weighted", zero_division=0),
    }
    if probs is not None:
        out.update(_ranking_metrics(y_true, probs, lab))
    return out


def _ranking_metrics(y_true: np.ndarray, probs: np.ndarray, lab: np.ndarray) -> dict[str, float]:
    absent = [c for c in lab.tolist() if c not in set(y_true.tolist())]
    if absent:
        logger.warning("auroc/auc_pr: class(es) %s absent from y_true; AUROC and AUC-PR are "
                       "undefined (NaN).", absent)
        return {"auroc": math.nan, "auc_pr": math.nan}
    if len(lab) == 2:
        pos = y_true == lab[1]
        return {"auroc": _quiet("auroc", skm.roc_auc_score, pos, probs[:, 1]),
                "auc_pr": _quiet("auc_pr", skm.average_precision_score, pos, probs[:, 1])}
    onehot = label_binarize(y_true, classes=lab)  # (N, K) one-vs-rest targets
    return {"auroc": _quiet("auroc", skm.roc_auc_score, onehot, probs, average="macro"),
            "auc_pr": _quiet("auc_pr", skm.average_precision_score, onehot, probs,
                             average="macro")}


def aggregate(df: pd.DataFrame, by: str | Sequence[str] | None = None,
              metrics: Sequence[str] | None = None, ddof: int = 1) -> pd.DataFrame:
    """Mean and standard deviation of metrics over the rows of each group.

    Parameters
    ----------
    df : DataFrame
        One row per unit (subject, fold, seed...), one column per metric.
    by : str or list of str, optional
        Grouping columns (e.g. ``["method", "dataset"]``); ``None`` aggregates all rows.
    metrics : list of str, optional
        Metric columns. Default: numeric columns other than ``by`` and the id columns
        ``subject, session, fold, seed, run, epoch, step, index, window_id``.
    ddof : int
        Delta degrees of freedom of the std (1: sample std, as pandas; 0: as ``np.std``).

    Returns
    -------
    table : DataFrame
        Tidy: columns ``*by, metric, mean, std, n`` (``n`` = non-NaN values; NaNs are skipped),
        groups in order of first appearance, metrics in the order given.
    """
    by_cols = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by_cols + list(metrics or []) if c not in df.columns]
    if missing:
        raise KeyError(f"aggregate: column(s) {missing} not in the table; columns: "
                       f"{list(df.columns)}.")
    if metrics is None:
        metrics = [c for c in df.columns if c not in by_cols and c not in ID_COLUMNS
                   and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("aggregate: no metric column to aggregate.")
    long = df.melt(id_vars=by_cols or None, value_vars=metrics, var_name="metric",
                   value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="raise")
    keys = by_cols + ["metric"]
    grouped = long.groupby(keys, sort=False, dropna=False)["value"]
    table = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=ddof),
                          "n": grouped.count()}).reset_index()
    order = {m: i for i, m in enumerate(metrics)}
    if by_cols:
        first = {k: i for i, k in enumerate(dict.fromkeys(map(tuple, df[by_cols].values.tolist())))}
        table["_g"] = [first[tuple(r)] for r in table[by_cols].values.tolist()]
    else:
        table["_g"] = 0
    table["_m"] = table["metric"].map(order)
    return table.sort_values(["_g", "_m"]).drop(columns=["_g", "_m"]).reset_index(drop=True)


def format_mean_std(table: pd.DataFrame, scale: float = 100.0, decimals: int = 1) -> pd.DataFrame:
    """A wide table of ``"93.7 ± 1.2"`` strings from :func:`aggregate`'s output.

    Parameters
    ----------
    table : DataFrame
        Columns ``*by, metric, mean, std`` (``n`` optional).
    scale : float
        Multiplier (100: fractions as percentages; 1 for kappa/AUROC printed as 0.886).
    decimals : int
        Digits after the decimal point. A missing std (one unit) prints the mean alone.

    Returns
    -------
    DataFrame
        One row per group of the ``by`` columns (as index), one column per metric.
    """
    need = {"metric", "mean", "std"}
    if not need <= set(table.columns):
        raise KeyError(f"format_mean_std needs columns {sorted(need)}, got {list(table.columns)}.")
    by_cols = [c for c in table.columns if c not in ("metric", "mean", "std", "n")]

    def text(mean: float, std: float) -> str:
        if not np.isfinite(mean):
            return "n/a"
        m = f"{mean * scale:.{decimals}f}"
        return m if not np.isfinite(std) else f"{m} ± {std * scale:.{decimals}f}"

    t = table.assign(text=[text(m, s) for m, s in zip(table["mean"], table["std"])])
    metrics = list(dict.fromkeys(t["metric"]))
    if not by_cols:
        return pd.DataFrame([dict(zip(t["metric"], t["text"]))], columns=metrics)
    groups = list(dict.fromkeys(map(tuple, t[by_cols].values.tolist())))
    wide = t.pivot(index=by_cols, columns="metric", values="text")
    index = pd.MultiIndex.from_tuples(groups, names=by_cols) if len(by_cols) > 1 else \
        pd.Index([g[0] for g in groups], name=by_cols[0])
    wide = wide.reindex(index=index, columns=metrics)
    wide.columns.name = None
    return wide
