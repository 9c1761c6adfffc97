"""Train/validation/test splits over a store's index table, each asserting its leakage rule.

* :func:`within_subject_split` - per subject, whole trials (or contiguous blocks of one long
  segment) go to one side; training windows that overlap a test window in time are purged, so
  overlapping windows of the same stretch of signal never sit on both sides.
* :func:`subject_kfold`, :func:`leave_one_subject_out` - no subject on both sides.
* :func:`fixed_subject_split` - train / validation / test subject lists given by a benchmark.
* :func:`cross_dataset` - train on some datasets, test on another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..utils import check_positive

_SEGMENT = ["dataset", "subject", "session", "recording", "trial"]


@dataclass
class Split:
    """Window ids of one split; ``name`` says which protocol and fold produced it."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    name: str = ""
    subject: str | None = None
    fold: int = 0

    def __repr__(self) -> str:
        return (f"Split({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)})")


def subject_keys(index: pd.DataFrame) -> pd.Series:
    """The subject of each window as a string; ``dataset/subject`` when the index spans several
    datasets (subject "01" of two datasets are two people)."""
    subj = index["subject"].astype(str)
    if "dataset" in index and index["dataset"].nunique() > 1:
        return index["dataset"].astype(str) + "/" + subj
    return subj


def _groups(index: pd.DataFrame, n_blocks: int) -> pd.Series:
    """A group key per window: its trial, or a contiguous block of a long single segment."""
    seg = index[_SEGMENT].astype(str).agg("/".join, axis=1)
    n_segments = seg.nunique()
    if n_segments >= n_blocks:
        return seg
    # Few long segments (e.g. one continuous recording per class): cut each into blocks.
    order = index.groupby(seg, sort=False)["start"].rank(method="first").astype(int) - 1
    size = index.groupby(seg, sort=False)["start"].transform("size")
    block = (order * n_blocks // size).astype(int)
    return seg + "#" + block.astype(str)


def _group_label(index: pd.DataFrame, groups: pd.Series) -> pd.Series:
    return index["label"].groupby(groups).agg(lambda s: s.mode().iloc[0])


def _take_groups(groups: pd.Series, labels: pd.Series, frac: float,
                 rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
    """Choose about ``frac`` of the groups in ``pool``, stratified by group label."""
    chosen = []
    pool_labels = labels.loc[pool]
    for lab in sorted(pool_labels.unique()):
        g = pool_labels.index[pool_labels == lab].to_numpy()
        g = g[rng.permutation(len(g))]
        n = int(round(frac * len(g)))
        n = min(max(n, 1), len(g) - 1) if len(g) > 1 else 0
        chosen.extend(g[:n])
    return np.asarray(chosen)


def purge_overlaps(index: pd.DataFrame, keep: np.ndarray, against: np.ndarray,
                   n_times: int) -> np.ndarray:
    """Drop from ``keep`` every window that shares samples with a window of ``against``."""
    if len(keep) == 0 or len(against) == 0:
        return keep
    key = index[["dataset", "subject", "session", "recording"]].astype(str).agg("/".join, axis=1)
    starts = index["start"].to_numpy()
    bad = np.zeros(len(keep), bool)
    against_key = key.iloc[against].to_numpy()
    against_start = starts[against]
    keep_key = key.iloc[keep].to_numpy()
    keep_start = starts[keep]
    for k in np.unique(keep_key):
        a = np.sort(against_start[against_key == k])
        if len(a) == 0:
            continue
        m = keep_key == k
        s = keep_start[m]
        # nearest test start on either side; overlap iff |s - a| < n_times
        pos = np.searchsorted(a, s)
        left = np.abs(s - a[np.clip(pos - 1, 0, len(a) - 1)])
        right = np.abs(a[np.clip(pos, 0, len(a) - 1)] - s)
        bad[np.flatnonzero(m)] = np.minimum(left, right) < n_times
    return keep[~bad]


def assert_no_overlap(index: pd.DataFrame, a: np.ndarray, b: np.ndarray, n_times: int) -> None:
    """Raise ``AssertionError`` if a window in ``a`` shares samples with a window in ``b``."""
    if len(purge_overlaps(index, a, b, n_times)) != len(a):
        raise AssertionError("Leakage: windows on both sides of the split share samples.")


def assert_disjoint_subjects(index: pd.DataFrame, a: np.ndarray, b: np.ndarray) -> None:
    """Raise ``AssertionError`` if a subject has windows on both sides."""
    sa = set(index["subject"].iloc[a].astype(str) + "@" + index["dataset"].iloc[a].astype(str))
    sb = set(index["subject"].iloc[b].astype(str) + "@" + index["dataset"].iloc[b].astype(str))
    both = sa & sb
    if both:
        raise AssertionError(f"Leakage: subjects {sorted(both)} are on both sides of the split.")


def within_subject_split(index: pd.DataFrame, n_times: int, *, test_size: float = 0.2,
                         val_size: float = 0.0, seed: int = 0, n_blocks: int = 10,
                         subjects: list[str] | None = None) -> list[Split]:
    """One split per subject: ``test_size`` of its trials (or blocks) held out.

    Parameters
    ----------
    index : DataFrame
        A store's index (``WindowStore.index``).
    n_times : int
        Window length in samples, to purge training windows that overlap test windows.
    test_size, val_size : float
        Fractions of groups (trials or blocks) for test and, from the rest, validation.
    n_blocks : int
        When a subject has fewer than this many trials, each long segment is cut into this many
        contiguous blocks that act as trials.
    """
    check_positive("test_size", test_size)
    out = []
    keys = subject_keys(index)
    all_subjects = sorted(keys.unique(), key=_natural)
    for subj in subjects or all_subjects:
        ids = np.flatnonzero((keys == str(subj)).to_numpy())
        if len(ids) == 0:
            raise ValueError(f"Invalid value for the 'subjects' parameter: subject {subj!r} has "
                             f"no windows; subjects are {all_subjects}.")
        sub = index.iloc[ids]
        groups = _groups(sub, n_blocks)
        labels = _group_label(sub, groups)
        rng = np.random.default_rng([seed, _stable_int(str(subj))])
        test_g = _take_groups(groups, labels, test_size, rng, labels.index.to_numpy())
        rest = np.setdiff1d(labels.index.to_numpy(), test_g)
        val_g = (_take_groups(groups, labels, val_size / max(1e-9, 1 - test_size), rng, rest)
                 if val_size > 0 else np.zeros(0, object))
        g = groups.to_numpy()
        test = ids[np.isin(g, test_g)]
        val = ids[np.isin(g, val_g)]
        train = ids[~np.isin(g, np.concatenate([test_g, val_g]))]
        held = np.concatenate([test, val])
        train = purge_overlaps(index, train, held, n_times)
        val = purge_overlaps(index, val, test, n_times)
        assert_no_overlap(index, train, test, n_times)
        assert_no_overlap(index, val, test, n_times)
        out.append(Split(train, test, val, name=f"within-subject/{subj}", subject=str(subj)))
    return out


def subject_kfold(index: pd.DataFrame, k: int = 5, *, seed: int = 0,
                  val_size: float = 0.0) -> list[Split]:
    """Subject-wise k-fold: each subject is in the test fold exactly once."""
    subj = subject_keys(index).to_numpy()
    subjects = np.array(sorted(set(subj), key=_natural))
    if k < 2 or k > len(subjects):
        raise ValueError(f"Invalid value for the 'k' parameter: expected 2..{len(subjects)} "
                         f"(the number of subjects), got {k}.")
    rng = np.random.default_rng(seed)
    folds = np.array_split(subjects[rng.permutation(len(subjects))], k)
    out = []
    for f, test_subjects in enumerate(folds):
        rest = np.setdiff1d(subjects, test_subjects)
        n_val = int(round(val_size * len(rest)))
        val_subjects = rest[rng.permutation(len(rest))[:n_val]] if n_val else np.array([])
        test = np.flatnonzero(np.isin(subj, test_subjects))
        val = np.flatnonzero(np.isin(subj, val_subjects))
        train = np.flatnonzero(~np.isin(subj, np.concatenate([test_subjects, val_subjects])))
        assert_disjoint_subjects(index, train, test)
        assert_disjoint_subjects(index, val, test)
        out.append(Split(train, test, val, name=f"subject-kfold/{f}", fold=f))
    return out


def leave_one_subject_out(index: pd.DataFrame, *, val_size: float = 0.0,
                          seed: int = 0) -> list[Split]:
    """One split per subject: that subject is the test set, all others train (``val_size`` of
    them, at random, validate)."""
    subj = subject_keys(index).to_numpy()
    subjects = sorted(set(subj), key=_natural)
    rng = np.random.default_rng(seed)
    out = []
    for f, s in enumerate(subjects):
        rest = np.array([o for o in subjects if o != s])
        n_val = int(round(val_size * len(rest)))
        val_subjects = rest[rng.permutation(len(rest))[:n_val]] if n_val else np.array([])
        test = np.flatnonzero(subj == s)
        val = np.flatnonzero(np.isin(subj, val_subjects))
        train = np.flatnonzero((subj != s) & ~np.isin(subj, val_subjects))
        assert_disjoint_subjects(index, train, test)
        assert_disjoint_subjects(index, val, test)
        out.append(Split(train, test, val, name=f"loso/{s}", subject=s, fold=f))
    return out


def fixed_subject_split(index: pd.DataFrame, train: list[str], test: list[str],
                        val: list[str] | None = None) -> Split:
    """Train / validation / test on given subject lists (how public benchmarks define their
    splits, e.g. eegmat subjects 00-27 / 28-31 / 32-35).

    Subjects are matched as strings, or by their number when that is unambiguous (``"7"``
    finds ``"07"``, ``"Subject07"`` or ``"S007"``: benchmarks list subject numbers). A subject
    named in two lists, or missing from the index, raises ``ValueError``.
    """
    keys = subject_keys(index)
    present = set(keys)
    norm: dict[str, str] = {}
    for s in sorted(present):
        norm[subject_number(s)] = s if subject_number(s) not in norm else ""  # "": two subjects, one number
    norm = {k: v for k, v in norm.items() if v}

    def ids(names: list[str] | None, role: str) -> np.ndarray:
        names = [str(s) for s in (names or [])]
        missing = [s for s in names if s not in present and subject_number(s) not in norm]
        if missing:
            raise ValueError(f"Invalid value for the '{role}_subjects' parameter: subjects "
                             f"{missing} have no windows; subjects are "
                             f"{sorted(present, key=_natural)}.")
        real = [s if s in present else norm[subject_number(s)] for s in names]
        return np.flatnonzero(keys.isin(real).to_numpy())

    roles = {"train": train, "val": val or [], "test": test}
    seen: dict[str, str] = {}
    for role, names in roles.items():
        for s in names:
            other = seen.setdefault(subject_number(str(s)), role)
            if other != role:
                raise ValueError(f"Subject {s!r} is in both the {other} and the {role} subjects.")
    tr, va, te = (ids(roles[r], r) for r in ("train", "val", "test"))
    if not len(tr) or not len(te):
        raise ValueError("fixed_subject_split needs training and test subjects.")
    assert_disjoint_subjects(index, tr, te)
    assert_disjoint_subjects(index, va, te)
    assert_disjoint_subjects(index, tr, va)
    return Split(tr, te, va, name="fixed-subjects")


def subject_number(s: str) -> str:
    """A subject's number when its name ends in one (``"Subject07"`` -> ``"7"``, ``"S001"`` ->
    ``"1"``), else the name: how benchmarks' subject lists match a dataset's names."""
    m = re.search(r"(\d+)$", s)
    return str(int(m.group(1))) if m else s


def cross_dataset(index: pd.DataFrame, train_datasets: list[str], test_dataset: str) -> Split:
    """Train on ``train_datasets``, test on ``test_dataset`` (no dataset on both sides)."""
    ds = index["dataset"].astype(str).to_numpy()
    if test_dataset in train_datasets:
        raise ValueError(f"Dataset {test_dataset!r} is both a training and the test dataset.")
    train = np.flatnonzero(np.isin(ds, train_datasets))
    test = np.flatnonzero(ds == test_dataset)
    if len(test) == 0:
        raise ValueError(f"No windows of test dataset {test_dataset!r}; datasets are "
                         f"{sorted(set(ds))}.")
    return Split(train, test, name=f"cross-dataset/{'+'.join(train_datasets)}->{test_dataset}")


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _stable_int(s: str) -> int:
    return int.from_bytes(s.encode()[:8].ljust(8, b"\0"), "little")
