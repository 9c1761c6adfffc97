"""The figure of a suite: our methods and the published numbers on one metric, chance marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .suite import Suite

__all__ = ["plot_suite"]

_MODES = {"linear": "linear probe", "full": "full fine-tuning", "features": "features"}


def plot_suite(suite: Suite, comparison: pd.DataFrame, metric: str | None = None,
               note: str = "") -> Figure:
    """One panel per adaptation mode: ours (filled, mean +- std over folds and seeds) and the
    published numbers (hollow, their std when given) on ``metric`` (default: the suite's), with
    the chance level of the balanced accuracy dashed and the feature baseline dotted. Published
    rows measured under another protocol are labelled with a dagger."""
    metric = metric or suite.metric
    df = comparison[comparison["metric"] == metric].copy()
    # the feature baseline (DE + logistic regression) is a reference line in every panel
    ref = df[df["mode"] == "features"]
    df = df[df["mode"] != "features"]
    modes = [m for m in ("linear", "full") if (df["mode"] == m).any()]
    rows = max([6, *df["mode"].value_counts()])  # entries of the fullest panel
    fig = Figure(figsize=(5.0 * max(1, len(modes)), 0.32 * rows + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(modes)), sharex=True))
    for ax, mode in zip(axes, modes or ["linear"], strict=False):
        d = df[df["mode"] == mode].sort_values(["kind", "value"], ascending=[False, True])
        labels = []
        for i, (_, r) in enumerate(d.iterrows()):
            ours = r["kind"] == "ours"
            differs = bool(str(r.get("protocol_differs", "") or "")) and not ours
            labels.append(f"{r['model']}{' †' if differs else ''}"
                          + ("" if ours else f" [{str(r['source']).split()[0]}]"))
            std = r["std"] if pd.notna(r["std"]) else 0.0
            ax.errorbar(r["value"], i, xerr=std, fmt="o", ms=6, capsize=2,
                        color="C0" if ours else "C1", mfc="C0" if ours else "white")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for k, (_, r) in enumerate(ref.iterrows()):
            ax.axvline(r["value"], ls=":", c=f"C{2 + k}", lw=1.2, label=f"{r['model']}")
        if metric == "balanced_accuracy":
            ax.axvline(suite.chance, ls="--", c="0.5", lw=1, label=f"chance {suite.chance:.2f}")
        if metric == "balanced_accuracy" or len(ref):
            ax.legend(loc="best", fontsize=7)
        ax.set_title(_MODES.get(mode, mode), fontsize=9)
        values = [*df["value"], *ref["value"]] + ([suite.chance] if metric ==
                                                  "balanced_accuracy" else [])
        if values:
            ax.set_xlim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05))
        ax.set_xlabel(metric.replace("_", " "))
    title = f"{suite.name}: ours (filled) vs published (hollow)"
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=8)
    return fig
