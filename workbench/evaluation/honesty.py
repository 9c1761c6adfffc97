"""Evaluation honesty: can a split measure the task, or only which recording a window is from?

When every recording holds one class (eegmat: one rest file and one arithmetic file per
subject; a one-file-per-condition study) and a split puts windows of the same recording on both
sides (any within-subject split), a classifier can score perfectly by recognising the recording
(its impedances, drifts, artefacts, head position) without learning anything about the task.
On eegmat this gives 0.99-1.00 within subject for every model and for the band-power baseline,
against about 0.63-0.66 across subjects. :func:`recording_confound` detects that layout from
the index alone, so every protocol can flag it in its log and results table; a multi-trial
layout (EEGMMIDB runs, where each recording holds trials of several classes) is not flagged.

References
----------
Kaufman S., Rosset S., Perlich C., Stitelman O. (2012). Leakage in data mining: formulation,
detection, and avoidance. ACM TKDD 6(4).
Zyma I. et al. (2019). Electroencephalograms during mental arithmetic task performance.
Data 4(1):14. (the one-file-per-condition layout of eegmat)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["RECORDING_COLUMNS", "RecordingConfound", "recording_confound"]

RECORDING_COLUMNS = ("dataset", "subject", "session", "recording")
"""The index columns that identify a recording (those present are used)."""


@dataclass(frozen=True)
class RecordingConfound:
    """The verdict of :func:`recording_confound` on one split.

    Attributes
    ----------
    confounded : bool
        True when the split can only measure recording identity.
    reason : str
        A human-readable explanation (and what to do), also when not confounded.
    fraction : float
        Share of the labelled test windows whose recording holds one label and also gives
        training windows (1.0 when confounded).
    recordings : tuple of str
        Those recordings, ``dataset/subject/session/recording``.
    """

    confounded: bool
    reason: str
    fraction: float
    recordings: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.confounded


def _recording_keys(index: pd.DataFrame) -> np.ndarray:
    cols = [c for c in RECORDING_COLUMNS if c in index.columns]
    if not cols:
        raise ValueError(f"Invalid value for the 'index' parameter: it needs recording columns "
                         f"(some of {list(RECORDING_COLUMNS)}), it has {list(index.columns)}.")
    return index[cols].astype(str).agg("/".join, axis=1).to_numpy()


def recording_confound(index: pd.DataFrame, train: Sequence[int] | np.ndarray,
                       test: Sequence[int] | np.ndarray, *, threshold: float = 1.0
                       ) -> RecordingConfound:
    """Whether a split can only measure recording identity.

    A labelled test window is *shortcut-able* when its recording holds a single label (among
    all labelled windows of ``index``) and the same recording also gives training windows: a
    model that recognises the recording predicts its label. The split is confounded when at
    least ``threshold`` of the labelled test windows are shortcut-able (by default all of
    them: each class's test windows share their recordings with training windows of the same
    class, i.e. every recording of the subject holds one label).

    Parameters
    ----------
    index : DataFrame
        One row per window with ``label`` and the recording columns ``dataset, subject,
        session, recording`` (those present); a WindowStore index.
    train, test : array of int
        Row positions in ``index`` (the window ids of a store index) of the split's training
        and test windows (validation windows may be added to ``train``).
    threshold : float
        Share of shortcut-able test windows from which the split is flagged, in (0, 1].

    Returns
    -------
    RecordingConfound
        ``confounded``, a ``reason`` suggesting a cross-subject protocol when flagged, the
        shortcut-able ``fraction`` and the ``recordings`` involved.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"Invalid value for the 'threshold' parameter: expected a number in "
                         f"(0, 1], got {threshold!r}.")
    if "label" not in index.columns:
        raise ValueError(f"Invalid value for the 'index' parameter: no 'label' column (has "
                         f"{list(index.columns)}).")
    train = np.asarray(train, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    n = len(index)
    for name, ids in (("train", train), ("test", test)):
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"Invalid value for the '{name}' parameter: window ids must be row "
                             f"positions in [0, {n}), got {ids.min()}..{ids.max()}.")
    labels = index["label"].to_numpy()
    recs = _recording_keys(index)
    labelled = labels >= 0
    per_rec = pd.Series(labels[labelled]).groupby(recs[labelled]).nunique()  # labels / recording
    single = set(per_rec.index[per_rec.to_numpy() == 1])
    test = test[labelled[test]]
    if not len(test):
        return RecordingConfound(False, "no labelled test windows", 0.0)
    train_recs = set(recs[train[labelled[train]]])
    shortcut = np.array([r in single and r in train_recs for r in recs[test]])
    fraction = float(shortcut.mean())
    involved = tuple(sorted(set(recs[test][shortcut])))
    if fraction >= threshold - 1e-12:
        classes = sorted(set(labels[test].tolist()))
        reason = (
            f"every labelled test window ({len(test)}, classes {classes}) comes from a recording "
            f"that holds a single label and also gives training windows ({len(involved)} "
            f"recordings, e.g. {', '.join(involved[:3])}): a model can score by recognising the "
            "recording (impedances, drifts, artefacts) instead of the task, so this split "
            "measures recording identity. Use a cross-subject protocol (leave-one-subject-out "
            "or subject k-fold), or data with several classes per recording.")
        return RecordingConfound(True, reason, fraction, involved)
    reason = (f"{fraction:.0%} of the labelled test windows come from single-label recordings "
              "seen in training" if fraction else
              "no test window shares a single-label recording with training windows")
    return RecordingConfound(False, reason, fraction, involved)
