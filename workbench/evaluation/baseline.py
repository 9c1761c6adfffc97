"""The feature baseline: band power / differential entropy per channel and band + a linear model.

Differential entropy (DE) of a Gaussian signal of variance ``s2`` is ``0.5 * log(2 pi e s2)``;
for a band-passed EEG channel the variance is the band power, so DE is an affine function of
log band power (Duan et al. 2013, Zheng & Lu 2015). Two estimators of the band power are given:
``method="welch"`` integrates a Welch PSD over the band (fast, the default) and
``method="filter"`` band-passes each band with a zero-phase Butterworth filter and takes the
variance, the literal definition (the slow reference twin; a test checks that they agree).

Two protocols return tidy tables with one row per subject (and seed): :func:`within_subject`
(per subject, whole trials held out, see :func:`workbench.data.splits.within_subject_split`) and
:func:`cross_subject` (leave one subject out). Classes are weighted ``balanced`` by default, so
the floor is fair on imbalanced labels, and each row says whether its split is ``confounded``
(it can only measure recording identity, :mod:`workbench.evaluation.honesty`).

References
----------
Duan R.-N., Zhu J.-Y., Lu B.-L. (2013). Differential entropy feature for EEG-based emotion
classification. 6th IEEE/EMBS Conference on Neural Engineering.
Zheng W.-L., Lu B.-L. (2015). Investigating critical frequency bands and channels for EEG-based
emotion recognition with deep neural networks. IEEE TAMD 7(3).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import signal
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ..data.splits import Split, leave_one_subject_out, within_subject_split
from ..data.windowing import check_finite_windows
from ..utils import check_option
from .honesty import recording_confound
from .metrics import classification_metrics

logger = logging.getLogger("workbench")

DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 14.0), "beta": (14.0, 31.0),
    "gamma": (31.0, 49.0),
}
"""Band edges in Hz, ``[low, high)``, the five bands of the SEED DE features."""

FEATURE_KINDS = ("de", "logpower")
_LOG_FLOOR = 1e-30  # V^2; keeps log finite on flat (e.g. disconnected) channels
_INDEX_COLUMNS = ("dataset", "subject", "session", "recording", "trial", "label", "start")


def _check_bands(bands: Mapping[str, tuple[float, float]], sfreq: float) -> None:
    for name, (lo, hi) in bands.items():
        if not 0 <= lo < hi <= sfreq / 2:
            raise ValueError(f"Invalid band {name!r} = ({lo}, {hi}) Hz for sfreq={sfreq} Hz: "
                             f"expected 0 <= low < high <= {sfreq / 2} (the Nyquist frequency).")


def band_power(X: np.ndarray, sfreq: float, bands: Mapping[str, tuple[float, float]] | None = None,
               method: str = "welch", nperseg: int | None = None) -> np.ndarray:
    """Power (variance, V^2) of every channel in every band.

    Parameters
    ----------
    X : ndarray, shape (N, C, T)
        Windows in volts.
    sfreq : float
        Sampling rate in Hz.
    bands : dict name -> (low, high), optional
        Band edges in Hz (``[low, high)``); :data:`DEFAULT_BANDS` when omitted.
    method : ``"welch"`` | ``"filter"``
        ``welch``: integral of a Welch PSD (Hann, 50 % overlap, ``nperseg`` = 1 s or the whole
        window if shorter) over the band. ``filter``: variance of the signal band-passed by a
        4th-order Butterworth filter applied forward and backward (reference).
    nperseg : int, optional
        Welch segment length in samples.

    Returns
    -------
    ndarray, shape (N, C, n_bands), float64
    """
    check_option("method", method, ("welch", "filter"))
    bands = dict(bands or DEFAULT_BANDS)
    _check_bands(bands, sfreq)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"Invalid value for the 'X' parameter: expected windows of shape "
                         f"(N, C, T), got shape {X.shape}.")
    check_finite_windows(X)
    if method == "welch":
        nperseg = int(nperseg or min(X.shape[-1], int(round(sfreq))))
        freqs, psd = signal.welch(X, fs=sfreq, nperseg=nperseg, noverlap=nperseg // 2,
                                  window="hann", detrend="constant", axis=-1)  # (N, C, F)
        df = freqs[1] - freqs[0]
        out = [psd[..., (freqs >= lo) & (freqs < hi)].sum(-1) * df for lo, hi in bands.values()]
    else:
        out = []
        for lo, hi in bands.values():
            btype, wn = ("lowpass", hi) if lo == 0 else ("bandpass", [lo, hi])
            if hi >= sfreq / 2:
                btype, wn = "highpass", lo
            sos = signal.butter(4, wn, btype=btype, fs=sfreq, output="sos")
            out.append(signal.sosfiltfilt(sos, X, axis=-1).var(axis=-1))
    return np.stack(out, axis=-1)  # (N, C, B)


def band_features(X: np.ndarray, sfreq: float, kind: str = "de",
                  bands: Mapping[str, tuple[float, float]] | None = None,
                  method: str = "welch") -> np.ndarray:
    """Differential entropy or log band power per channel and band, flattened.

    ``de = 0.5 * log(2 pi e * P)`` and ``logpower = log(P)`` with ``P`` the band power of
    :func:`band_power` (the Gaussian closed form of DE).

    Returns
    -------
    ndarray, shape (N, C * n_bands)
        Channel-major: column ``c * n_bands + b`` is channel ``c``, band ``b``.
    """
    check_option("kind", kind, FEATURE_KINDS)
    p = np.maximum(band_power(X, sfreq, bands, method), _LOG_FLOOR)  # (N, C, B)
    feats = 0.5 * np.log(2 * np.pi * np.e * p) if kind == "de" else np.log(p)
    return feats.reshape(len(feats), -1)  # (N, C * B)


class FeatureBaseline(ClassifierMixin, BaseEstimator):
    """Band features -> StandardScaler -> logistic regression or RBF SVM (Platt probabilities).

    ``fit`` / ``predict`` / ``predict_proba`` take either windows (N, C, T), whose features are
    computed with ``sfreq``, ``kind``, ``bands`` and ``method``, or ready features (N, D).

    Parameters
    ----------
    kind : ``"de"`` | ``"logpower"``
    classifier : ``"logreg"`` | ``"svm"``
    C : float
        Inverse regularisation strength of either classifier.
    sfreq : float, optional
        Needed only for windows.
    bands : dict, optional
        :data:`DEFAULT_BANDS` when omitted.
    method : ``"welch"`` | ``"filter"``
    random_state : int
        Seed of the SVM.
    class_weight : "balanced" or None
        ``"balanced"`` (default) weights each class by ``n / (n_classes * n_c)``, so a
        minority class counts as much as the majority in the loss (on balanced labels the
        weights are all 1 and nothing changes); None fits unweighted, which on a 1:5 task
        can predict the majority class everywhere (balanced accuracy 0.5).
    """

    def __init__(self, kind: str = "de", classifier: str = "logreg", C: float = 1.0,
                 sfreq: float | None = None, bands: Mapping | None = None,
                 method: str = "welch", random_state: int = 0,
                 class_weight: str | None = "balanced"):
        self.kind = kind
        self.classifier = classifier
        self.C = C
        self.sfreq = sfreq
        self.bands = bands
        self.method = method
        self.random_state = random_state
        self.class_weight = class_weight

    def _features(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 2:
            return X
        if self.sfreq is None:
            raise ValueError("FeatureBaseline got windows (N, C, T) but no 'sfreq'; pass "
                             "sfreq=... or precomputed features (N, D).")
        return band_features(X, self.sfreq, self.kind, self.bands, self.method)

    def _make_pipeline(self) -> Pipeline:
        check_option("kind", self.kind, FEATURE_KINDS)
        check_option("classifier", self.classifier, ("logreg", "svm"))
        check_option("class_weight", self.class_weight, ("balanced", None))
        if self.classifier == "logreg":
            clf = LogisticRegression(C=self.C, max_iter=2000, class_weight=self.class_weight)
        else:
            # Platt-scaled probabilities (what SVC(probability=True), deprecated in
            # scikit-learn 1.9, computes), from an internal 5-fold cross-validation
            clf = CalibratedClassifierCV(SVC(C=self.C, random_state=self.random_state,
                                             class_weight=self.class_weight),
                                         method="sigmoid", ensemble=False)
        return Pipeline([("scale", StandardScaler()), ("clf", clf)])

    def fit(self, X: np.ndarray, y: np.ndarray) -> FeatureBaseline:
        self.pipeline_ = self._make_pipeline().fit(self._features(X), np.asarray(y))
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict_proba(self._features(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict(self._features(X))


# ----------------------------------------------------------------------------- protocols
def _prepare(X: np.ndarray, index: pd.DataFrame, sfreq: float, kind: str, bands, method: str,
             n_times: int | None) -> tuple[np.ndarray, pd.DataFrame, int]:
    missing = [c for c in _INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"Invalid value for the 'index' parameter: the window index lacks "
                         f"columns {missing} (expected {list(_INDEX_COLUMNS)}).")
    if len(index) != len(X):
        raise ValueError(f"X has {len(X)} windows but the index has {len(index)} rows.")
    X = np.asarray(X)
    if X.ndim == 3:
        n_times = X.shape[-1]
        feats = band_features(X, sfreq, kind, bands, method)
    elif X.ndim == 2:
        if n_times is None:
            raise ValueError("Precomputed features (N, D) need 'n_times' (the window length in "
                             "samples) so that overlapping windows can be purged from training.")
        feats = X
    else:
        raise ValueError(f"Invalid value for the 'X' parameter: expected windows (N, C, T) or "
                         f"features (N, D), got shape {X.shape}.")
    return feats, index.reset_index(drop=True), int(n_times)


def _evaluate(feats: np.ndarray, y: np.ndarray, split: Split, labels: list, model_kw: dict,
              seed: int) -> dict:
    model = FeatureBaseline(random_state=seed, **model_kw).fit(feats[split.train], y[split.train])
    prob = model.predict_proba(feats[split.test])  # (n_test, n_classes seen in training)
    full = np.zeros((len(prob), len(labels)))
    full[:, [labels.index(c) for c in model.classes_]] = prob
    return {"n_train": len(split.train), "n_test": len(split.test),
            **classification_metrics(y[split.test], full, labels=labels)}


def within_subject(X: np.ndarray, index: pd.DataFrame, sfreq: float, *, kind: str = "de",
                   classifier: str = "logreg", C: float = 1.0, bands: Mapping | None = None,
                   method: str = "welch", test_size: float = 0.2, seeds: Sequence[int] = (0,),
                   n_times: int | None = None, class_weight: str | None = "balanced"
                   ) -> pd.DataFrame:
    """Per-subject train/test of the feature baseline, whole trials held out.

    Parameters
    ----------
    X : ndarray, shape (N, C, T) or (N, D)
        Windows (features are computed once) or ready features (then give ``n_times``).
    index : DataFrame
        One row per window with ``dataset, subject, session, recording, trial, label, start``
        (a WindowStore index or :func:`workbench.data.windowing.make_windows` rows).
    sfreq : float
        Sampling rate of the windows.
    kind, classifier, C, bands, method, class_weight
        See :class:`FeatureBaseline`.
    test_size : float
        Fraction of each subject's trials held out, stratified by label.
    seeds : sequence of int
        One split (and fit) per seed.

    Returns
    -------
    DataFrame
        One row per dataset, subject and seed: ``dataset, subject, seed, protocol, n_train,
        n_test``, ``confounded`` (the split can only measure recording identity, see
        :func:`workbench.evaluation.honesty.recording_confound`; also logged as a warning) and
        the metrics of :func:`workbench.evaluation.metrics.classification_metrics`.
    """
    feats, index, n_times = _prepare(X, index, sfreq, kind, bands, method, n_times)
    return _run_protocol(
        feats, index, "within_subject", seeds,
        {"kind": kind, "classifier": classifier, "C": C, "class_weight": class_weight},
        lambda sub, seed: within_subject_split(sub, n_times, test_size=test_size, seed=seed))


def _run_protocol(feats: np.ndarray, index: pd.DataFrame, protocol: str, seeds: Sequence[int],
                  model_kw: dict, make_splits) -> pd.DataFrame:
    """Fit and score the baseline on every split ``make_splits(dataset_index, seed)`` of every
    dataset in ``index``; one row per dataset, split and seed."""
    y = index["label"].to_numpy()
    rows = []
    for ds, sub in index.groupby("dataset", sort=True):
        ids = sub.index.to_numpy()
        labels = sorted(sub["label"].unique().tolist())
        flagged: dict[str, str] = {}
        for seed in seeds:
            for split in make_splits(sub.reset_index(drop=True), seed):
                split = Split(ids[split.train], ids[split.test], name=split.name,
                              subject=split.subject)
                confound = recording_confound(index, split.train, split.test)
                if confound.confounded:
                    flagged[str(split.subject)] = confound.reason
                rows.append({"dataset": ds, "subject": split.subject, "seed": seed,
                             "protocol": protocol, "confounded": confound.confounded,
                             **_evaluate(feats, y, split, labels, model_kw, seed)})
        if flagged:
            first = next(iter(flagged))
            logger.warning("%s, %s: the splits of %d of %d subjects can only measure recording "
                           "identity (subjects %s); subject %s: %s", ds, protocol, len(flagged),
                           sub["subject"].nunique(), sorted(flagged), first, flagged[first])
    return pd.DataFrame(rows)


def cross_subject(X: np.ndarray, index: pd.DataFrame, sfreq: float, *, kind: str = "de",
                  classifier: str = "logreg", C: float = 1.0, bands: Mapping | None = None,
                  method: str = "welch", seeds: Sequence[int] = (0,),
                  n_times: int | None = None, class_weight: str | None = "balanced"
                  ) -> pd.DataFrame:
    """Leave-one-subject-out evaluation of the feature baseline, per dataset.

    Same arguments and table as :func:`within_subject`; ``subject`` is the held-out subject.
    """
    feats, index, _ = _prepare(X, index, sfreq, kind, bands, method, n_times)
    return _run_protocol(feats, index, "cross_subject", seeds,
                         {"kind": kind, "classifier": classifier, "C": C,
                          "class_weight": class_weight},
                         lambda sub, seed: leave_one_subject_out(sub))
