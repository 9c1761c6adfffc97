"""Evaluation protocols: how a store's windows are split into train / validation / test folds.

One vocabulary for every method and for the DE baseline (``protocol=...`` in the drivers and
notebooks); every split asserts its leakage rule (see :mod:`workbench.data.splits`):

==================  ==========================================================================
``within_subject``  per subject, whole trials (or purged blocks) held out (One Model for All)
``subject_kfold``   subject-wise k-fold with validation subjects (STELAR's cross-evaluation)
``loso``            leave one subject out (validation subjects drawn from the others)
``fixed``           given train / validation / test subject lists (public benchmarks)
``cross_dataset``   train on other datasets, test on this one (the driver handles it)
==================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..data.splits import (
    Split,
    fixed_subject_split,
    leave_one_subject_out,
    subject_keys,
    subject_kfold,
    within_subject_split,
)
from ..utils import check_option

__all__ = ["PROTOCOLS", "Protocol", "make_splits"]

PROTOCOLS = ("within_subject", "subject_kfold", "loso", "fixed", "cross_dataset")


@dataclass
class Protocol:
    """A protocol and its options (flat, so notebooks pass them as parameters).

    Parameters
    ----------
    name : str
        One of :data:`PROTOCOLS`.
    folds : int
        Number of subject folds of ``subject_kfold``.
    max_folds : int, optional
        Run only the first folds (subjects, for ``within_subject`` and ``loso``): a smoke
        run's budget. None runs all.
    test_size, val_size : float
        ``within_subject``: fractions of trials held out for test and validation; subject
        protocols: ``val_size`` is the fraction of training subjects that validate.
    train_subjects, val_subjects, test_subjects : list of str
        The subject lists of ``fixed``.
    train_datasets : list of str
        ``cross_dataset``: the datasets trained on.
    """

    name: Literal["within_subject", "subject_kfold", "loso", "fixed", "cross_dataset"] = (
        "within_subject")
    folds: int = 5
    max_folds: int | None = None
    test_size: float = 0.2
    val_size: float = 0.1
    train_subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)
    test_subjects: list[str] = field(default_factory=list)
    train_datasets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_option("protocol", self.name, PROTOCOLS)
        if self.name == "fixed" and not (self.train_subjects and self.test_subjects):
            raise ValueError("Protocol 'fixed' needs 'train_subjects' and 'test_subjects' "
                             "(and optionally 'val_subjects').")
        if self.name == "cross_dataset" and not self.train_datasets:
            raise ValueError("Protocol 'cross_dataset' needs 'train_datasets'.")

    def settings(self) -> dict[str, Any]:
        """What determines the folds (recorded in run settings)."""
        keep = {"within_subject": ("test_size", "val_size", "max_folds"),
                "subject_kfold": ("folds", "val_size", "max_folds"),
                "loso": ("val_size", "max_folds"),
                "fixed": ("train_subjects", "val_subjects", "test_subjects"),
                "cross_dataset": ("train_datasets", "val_size")}[self.name]
        d = asdict(self)
        return {"name": self.name, **{k: d[k] for k in keep}}

    @classmethod
    def of(cls, protocol: str | Protocol | None, **options: Any) -> Protocol:
        """A Protocol from a name and options (notebook parameters), or as given."""
        if isinstance(protocol, Protocol):
            return protocol
        return cls(name=protocol or "within_subject", **options)


def make_splits(protocol: Protocol, index: pd.DataFrame, n_times: int, *, seed: int = 0,
                subjects: list[str] | None = None) -> list[Split]:
    """The folds of ``protocol`` over a store's index (``subjects`` restricts them).

    Each split carries ``name`` (protocol/fold), ``fold`` and, for per-subject protocols,
    ``subject``; each asserted its leakage rule when it was made.
    """
    if subjects:
        keep = subject_keys(index).isin([str(s) for s in subjects]).to_numpy()
        sub_ids = np.flatnonzero(keep)
        splits = make_splits(protocol, index.iloc[sub_ids].reset_index(drop=True), n_times,
                             seed=seed)
        # back to the store's window ids
        return [Split(sub_ids[s.train], sub_ids[s.test], sub_ids[s.val], name=s.name,
                      subject=s.subject, fold=s.fold) for s in splits]
    p = protocol
    if p.name == "within_subject":
        splits = within_subject_split(index, n_times, test_size=p.test_size,
                                      val_size=p.val_size, seed=seed)
        splits = [Split(s.train, s.test, s.val, s.name, s.subject, fold=i)
                  for i, s in enumerate(splits)]
    elif p.name == "subject_kfold":
        splits = subject_kfold(index, k=p.folds, seed=seed, val_size=p.val_size)
    elif p.name == "loso":
        splits = leave_one_subject_out(index, val_size=p.val_size, seed=seed)
    elif p.name == "fixed":
        splits = [fixed_subject_split(index, p.train_subjects, p.test_subjects,
                                      p.val_subjects)]
    else:
        raise ValueError("Protocol 'cross_dataset' splits across stores: use the drivers "
                         "(workbench.experiments.finetune with train_stores).")
    return splits[:p.max_folds] if p.max_folds else splits
