"""Metrics against values computed by hand, and mean ± std tables against NumPy."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from workbench.evaluation import aggregate, classification_metrics, format_mean_std

# Three classes, six samples. Confusion matrix (rows true, columns predicted):
#   [[1, 1, 0],
#    [0, 1, 1],
#    [0, 0, 2]]
Y3 = [0, 1, 2, 2, 1, 0]
P3 = [0, 2, 2, 2, 1, 1]


def test_multiclass_hand_values():
    m = classification_metrics(Y3, P3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    # p_o = 4/6; p_e = (2*1 + 2*2 + 2*3) / 36 = 1/3; kappa = (2/3 - 1/3) / (1 - 1/3)
    assert m["cohen_kappa"] == pytest.approx(0.5)
    # per-class F1: 2/3 (P 1, R 1/2), 1/2 (P 1/2, R 1/2), 4/5 (P 2/3, R 1); supports 2, 2, 2
    assert m["f1_weighted"] == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    assert "auroc" not in m  # predictions only


def test_binary_probabilities_hand_values():
    y = [0, 0, 1, 1, 1, 0]
    p1 = [0.1, 0.6, 0.7, 0.4, 0.9, 0.2]
    m = classification_metrics(y, p1)
    # positives 0.7, 0.4, 0.9 vs negatives 0.1, 0.6, 0.2: 3 + 2 + 3 of 9 pairs ordered
    assert m["auroc"] == pytest.approx(8 / 9)
    # ranked: 0.9(+) 0.7(+) 0.6(-) 0.4(+) ...: precisions at the positives 1, 1, 3/4
    assert m["auc_pr"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    # threshold 0.5 -> predictions 0 1 1 0 1 0: confusion [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["cohen_kappa"] == pytest.approx((4 / 6 - 1 / 2) / (1 - 1 / 2))
    # the same from an (N, 2) probability matrix
    two = np.stack([1 - np.array(p1), p1], axis=1)
    assert classification_metrics(y, two) == pytest.approx(m)


def _auc_by_pairs(pos_scores, neg_scores) -> float:
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos_scores for n in neg_scores]
    return sum(pairs) / len(pairs)


def test_multiclass_auroc_is_one_vs_rest_macro():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    probs = rng.dirichlet(np.ones(3), size=len(y))
    m = classification_metrics(y, probs)
    ref = np.mean([_auc_by_pairs(probs[y == c, c], probs[y != c, c]) for c in range(3)])
    assert m["auroc"] == pytest.approx(ref)
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    # hand example: class c's column ranks every sample of c first -> AUROC 1
    perfect = np.eye(3)[y] * 0.8 + 0.1
    assert classification_metrics(y, perfect)["auroc"] == pytest.approx(1.0)
    assert classification_metrics(y, perfect)["auc_pr"] == pytest.approx(1.0)


def test_absent_class_gives_nan_and_a_warning(caplog):
    y = [0, 0, 1, 1]
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3]])
    with caplog.at_level(logging.WARNING, logger="workbench"):
        m = classification_metrics(y, probs)
    assert math.isnan(m["auroc"]) and math.isnan(m["auc_pr"])
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert any("absent" in r.message and "[2]" in r.message for r in caplog.records)
    # binary with a single class present
    with caplog.at_level(logging.WARNING, logger="workbench"):
        m = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["auroc"]) and m["accuracy"] == pytest.approx(2 / 3)
    # kappa undefined when both raters use one class: NaN, logged
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workbench"):
        m = classification_metrics([0, 0, 0], [0, 0, 0], labels=[0, 1])
    assert math.isnan(m["cohen_kappa"]) and m["accuracy"] == pytest.approx(1.0)
    assert any("cohen_kappa" in r.message for r in caplog.records)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="y_true.*\\[5\\]"):
        classification_metrics([0, 5], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="rows"):
        classification_metrics([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        classification_metrics([0, 1], np.full((2, 3), 1 / 3), labels=[0, 1])


# ----------------------------------------------------------------------------- aggregation
def _results() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for method in ("scratch", "pretrained"):
        for subject in range(1, 6):
            for seed in (42, 43):
                rows.append({"method": method, "subject": subject, "seed": seed,
                             "accuracy": rng.uniform(0.6, 1.0), "kappa": rng.uniform(0, 1)})
    return pd.DataFrame(rows)


def test_aggregate_against_numpy():
    df = _results()
    table = aggregate(df, by="method")
    assert list(table.columns) == ["method", "metric", "mean", "std", "n"]
    assert table[["method", "metric"]].values.tolist() == [
        ["scratch", "accuracy"], ["scratch", "kappa"],
        ["pretrained", "accuracy"], ["pretrained", "kappa"]]  # subject/seed are ids, not metrics
    for _, row in table.iterrows():
        vals = df.loc[df["method"] == row["method"], row["metric"]].to_numpy()
        assert row["mean"] == pytest.approx(np.mean(vals))
        assert row["std"] == pytest.approx(np.std(vals, ddof=1))
        assert row["n"] == len(vals)
    t0 = aggregate(df, by=["method", "seed"], metrics=["accuracy"], ddof=0)
    sel = df[(df["method"] == "pretrained") & (df["seed"] == 43)]["accuracy"].to_numpy()
    row = t0[(t0["method"] == "pretrained") & (t0["seed"] == 43)].iloc[0]
    assert row["std"] == pytest.approx(np.std(sel)) and row["n"] == 5
    overall = aggregate(df, metrics=["kappa"])
    assert overall["mean"].item() == pytest.approx(df["kappa"].mean())


def test_aggregate_skips_nan_and_counts():
    df = pd.DataFrame({"fold": [1, 2, 3], "auroc": [0.8, np.nan, 0.9]})
    row = aggregate(df).iloc[0]
    assert row["mean"] == pytest.approx(0.85) and row["n"] == 2
    assert row["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    with pytest.raises(KeyError, match="dataset"):
        aggregate(df, by="dataset")


def test_format_mean_std():
    table = pd.DataFrame({"method": ["a", "a", "b"], "metric": ["accuracy", "kappa", "accuracy"],
                          "mean": [0.93712, 0.5, 0.801], "std": [0.01234, 0.1, np.nan],
                          "n": [5, 5, 1]})
    wide = format_mean_std(table)
    assert wide.loc["a", "accuracy"] == "93.7 ± 1.2"
    assert wide.loc["a", "kappa"] == "50.0 ± 10.0"
    assert wide.loc["b", "accuracy"] == "80.1"  # one unit: no std
    assert pd.isna(wide.loc["b", "kappa"])
    assert list(wide.columns) == ["accuracy", "kappa"]
    raw = format_mean_std(table, scale=1, decimals=3)
    assert raw.loc["a", "kappa"] == "0.500 ± 0.100"
    flat = format_mean_std(aggregate(_results(), metrics=["accuracy"]))
    assert flat.shape == (1, 1) and "±" in flat.iloc[0, 0]
