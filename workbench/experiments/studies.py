"""Studies built from the drivers: ablations, cross-dataset transfer, the paper's table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..channels import ChannelVocabulary
from ..config import Profile
from ..data.store import WindowStore
from ..evaluation.metrics import aggregate
from ..evaluation.protocols import Protocol
from ..methods import Method, get_method
from ..runs import RunLayout
from .finetune import finetune
from .pretrain import as_layout, as_profile, pretrain


def ablation_study(method: str | Method, pretrain_stores: Sequence[WindowStore],
                   store: WindowStore, *, run_dir: str | Path | RunLayout = "runs/manual",
                   profile: str | Profile = "smoke", variants: Sequence[str] | None = None,
                   seeds: Sequence[int] = (42,), device: str = "auto",
                   protocol: str | Protocol = "within_subject", mode: str | None = None,
                   baseline: bool = False) -> pd.DataFrame:
    """Pre-train and fine-tune every variant; one row per variant, fold and seed.

    Pre-training runs are found by their settings (:class:`workbench.runs.RunLayout`): variants
    that pre-train the same thing share one run, and runs another notebook already finished
    (03_pretrain, 04_finetune) are used as they are. Variants trained from scratch are
    fine-tuned in mode ``full``; the others in ``mode`` (default: the method's).
    """
    m, prof, layout = get_method(method), as_profile(profile), as_layout(run_dir)
    tables = []
    for v in list(variants or m.variants):
        spec = m.variant(v)
        ckpt = None
        if spec.pretrained:
            ckpt = pretrain(m, pretrain_stores, run_dir=layout, profile=prof, variant=v,
                            seed=seeds[0], device=device).out_dir
        res = finetune(m, store, run_dir=layout, profile=prof, variant=v, pretrained=ckpt,
                       seeds=seeds, device=device, protocol=protocol,
                       mode=(mode or m.default_mode) if spec.pretrained else "full",
                       baseline=baseline and not tables)
        tables.append(res.results)
    return pd.concat(tables, ignore_index=True)


def cross_dataset_transfer(method: str | Method, pretrain_stores: Sequence[WindowStore],
                           store: WindowStore, *, run_dir: str | Path | RunLayout = "runs/manual",
                           profile: str | Profile = "smoke",
                           schemas: Sequence[str] = ("intersection", "ucs"),
                           seeds: Sequence[int] = (42,), device: str = "auto",
                           protocol: str | Protocol = "within_subject") -> pd.DataFrame:
    """Pre-train on ``pretrain_stores``, fine-tune on ``store``, once per channel schema:
    ``"ucs"`` (the union of all datasets' channels) or ``"intersection"`` (only the channels
    every dataset has, in pre-training and fine-tuning). One Model for All, Table I."""
    m, prof, layout = get_method(method), as_profile(profile), as_layout(run_dir)
    names = [s.ch_names for s in [*pretrain_stores, store]]
    tables = []
    for schema in schemas:
        if schema == "ucs":
            vocab = ChannelVocabulary.union(*names)
        elif schema == "intersection":
            vocab = ChannelVocabulary.intersection(*names)
        else:
            raise ValueError(f"Invalid value for the 'schemas' parameter: expected 'ucs' or "
                             f"'intersection', got {schema!r}.")
        pre = pretrain(m, pretrain_stores, run_dir=layout, profile=prof, seed=seeds[0],
                       device=device, vocab=vocab)
        channels = [c for c in store.ch_names if c in vocab]
        res = finetune(m, store, run_dir=layout, profile=prof, pretrained=pre.out_dir,
                       seeds=seeds, device=device, channels=channels, protocol=protocol)
        tables.append(res.results.assign(schema=schema, n_channels=len(channels),
                                          vocab_size=len(vocab)))
    return pd.concat(tables, ignore_index=True)


def paper_comparison(method: str | Method, table: pd.DataFrame, dataset_alias: str,
                     metric: str | None = None) -> pd.DataFrame:
    """Our mean ± std per variant next to the paper's number for ``dataset_alias``, on the
    SAME metric: the one the paper reports for that variant and dataset (``metric`` forces
    one). Values are fractions; a variant the paper does not report gets NaN."""
    m = get_method(method)
    paper = m.paper_table()
    paper = paper[paper["dataset"] == dataset_alias]
    rows = []
    for v in table["variant"].unique():
        mine = paper[paper["variant"] == v]
        metrics = [metric] if metric else (list(mine["metric"]) or ["balanced_accuracy"])
        for met in metrics:
            agg = aggregate(table[table["variant"] == v], by=None, metrics=[met])
            hit = mine[mine["metric"] == met]["value"]
            rows.append({"variant": v,
                         "description": m.variants[v].description if v in m.variants else v,
                         "metric": met, "ours_mean": float(agg["mean"].iloc[0]),
                         "ours_std": float(agg["std"].iloc[0]), "n": int(agg["n"].iloc[0]),
                         "paper": float(hit.iloc[0]) if len(hit) else np.nan,
                         "paper_dataset": dataset_alias})
    return pd.DataFrame(rows)
