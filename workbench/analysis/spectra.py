"""Power spectra of windows: per-group mean PSDs, class-difference band-power maps, the class
difference of waveform skewness (what band power cannot show), and a permutation test that says
whether a class-difference map is above chance.

References
----------
.. [1] Nichols T. E., Holmes A. P. (2002). Nonparametric permutation tests for functional
       neuroimaging: a primer with examples. Hum. Brain Mapp. 15(1). (The max-statistic over
       channels controls the family-wise error of a scalp map.)
.. [2] Cole S. R., Voytek B. (2017). Brain oscillations and the importance of waveform shape.
       Trends Cogn. Sci. 21(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import butter, sosfiltfilt, welch
from scipy.stats import skew


def window_psd(x: np.ndarray, sfreq: float, fmax: float | None = None,
               nperseg: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of windows ``x`` (N, C, T): returns ``freqs`` (F,) and ``psd`` (N, C, F)."""
    nperseg = nperseg or min(x.shape[-1], int(sfreq))
    freqs, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=-1)
    if fmax is not None:
        keep = freqs <= fmax
        freqs, psd = freqs[keep], psd[..., keep]
    return freqs, psd


def group_psd(x: np.ndarray, groups: Sequence, sfreq: float, fmax: float | None = None
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mean PSD over windows and channels for each group label (e.g. class or dataset)."""
    freqs, psd = window_psd(x, sfreq, fmax)
    groups = np.asarray(groups)
    return freqs, {str(g): psd[groups == g].mean(axis=(0, 1)) for g in pd.unique(groups)}


def log_band_power(x: np.ndarray, sfreq: float, band: tuple[float, float]) -> np.ndarray:
    """log10 power of each window and channel in ``band``: (N, C, T) -> (N, C)."""
    from ..evaluation.baseline import band_power

    return np.log10(band_power(x, sfreq, {"band": band})[..., 0])  # (N, C)


def window_skewness(x: np.ndarray, sfreq: float, band: tuple[float, float]) -> np.ndarray:
    """Skewness of each window and channel after a band-pass to ``band``: (N, C, T) -> (N, C).

    4th-order Butterworth, zero phase. Skewness is a third-order statistic: it tells sharp
    peaks from sharp troughs, a waveform-shape difference that leaves every power spectrum,
    hence every band-power feature, unchanged [2]_.
    """
    lo, hi = band
    if not 0 < lo < hi < sfreq / 2:
        raise ValueError(f"Invalid value for the 'band' parameter: expected 0 < low < high < "
                         f"{sfreq / 2:g} Hz (Nyquist), got {band}.")
    sos = butter(4, [lo, hi], btype="bandpass", fs=sfreq, output="sos")
    return skew(sosfiltfilt(sos, np.asarray(x, dtype=np.float64), axis=-1), axis=-1)  # (N, C)


def class_band_difference(x: np.ndarray, labels: np.ndarray, sfreq: float,
                          band: tuple[float, float], a: int, b: int) -> np.ndarray:
    """Per-channel difference of mean log10 band power, class ``b`` minus class ``a`` (C,)."""
    bp = log_band_power(x, sfreq, band)
    return bp[labels == b].mean(0) - bp[labels == a].mean(0)


def class_skewness_difference(x: np.ndarray, labels: np.ndarray, sfreq: float,
                              band: tuple[float, float], a: int, b: int) -> np.ndarray:
    """Per-channel difference of mean skewness, class ``b`` minus class ``a`` (C,).

    See :func:`window_skewness`. Shape effects differ between subjects; compare within one
    subject.
    """
    sk = window_skewness(x, sfreq, band)
    return sk[labels == b].mean(0) - sk[labels == a].mean(0)


def trial_blocks(index: pd.DataFrame) -> np.ndarray:
    """One integer per window naming its trial (subject, session, recording, trial): the
    windows of one trial overlap and share a label, so a permutation test moves them together.

    ``index`` is a WindowStore index; columns it lacks are left out of the key.
    """
    cols = [c for c in ("dataset", "subject", "session", "recording", "trial") if c in index]
    if not cols:
        return np.arange(len(index))
    return index.groupby(cols, sort=False, dropna=False).ngroup().to_numpy()


def class_difference_significance(features: np.ndarray, labels: np.ndarray, a: int, b: int, *,
                                  blocks: np.ndarray | None = None,
                                  strata: np.ndarray | None = None, n_permutations: int = 1000,
                                  alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Is a per-channel class-difference map above chance? A max-statistic permutation test.

    The statistic of a channel is the difference of the class means (``b`` minus ``a``) of its
    feature standardised over the windows (so channels of different variance compete fairly);
    the map's statistic is the largest absolute value over channels. Class labels are permuted
    over ``blocks`` (windows of one trial move together: they overlap and are not independent)
    and only within ``strata`` (e.g. subjects, so a subject's share of each class is kept). The
    largest value over channels of each permutation forms the null distribution, which controls
    the family-wise error over the channels of the map [1]_.

    Parameters
    ----------
    features : ndarray, shape (N, C)
        One value per window and channel (e.g. :func:`log_band_power`, :func:`window_skewness`).
    labels : ndarray, shape (N,)
        Class of each window; windows of other classes than ``a`` and ``b`` are left out.
    a, b : int
        The two classes compared (difference ``b - a``).
    blocks : ndarray, shape (N,), optional
        Exchangeable unit of each window (e.g. :func:`trial_blocks`); default: each window.
    strata : ndarray, shape (N,), optional
        Labels are permuted only within a stratum (e.g. the subject); default: one stratum.
    n_permutations : int
    alpha : float
        Family-wise error level of the per-channel verdicts.
    seed : int

    Returns
    -------
    dict
        ``difference`` (C,): class-mean difference in the feature's units; ``statistic``: the
        largest absolute standardised difference; ``p_value``: ``(k + 1) / (n + 1)`` with ``k``
        permutations at least as extreme; ``p_channels`` (C,): family-wise adjusted p-value of
        each channel; ``significant`` (C,) bool: ``p_channels <= alpha``; ``n_significant``;
        ``n_units`` (exchangeable units) and ``n_permutations``.
    """
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if f.ndim != 2 or len(f) != len(labels):
        raise ValueError(f"Invalid value for the 'features' parameter: expected shape (N, C) "
                         f"with N = {len(labels)} labels, got {f.shape}.")
    if n_permutations < 1:
        raise ValueError(f"Invalid value for the 'n_permutations' parameter: expected >= 1, got "
                         f"{n_permutations}.")
    blocks = np.arange(len(f)) if blocks is None else np.asarray(blocks)
    strata = np.zeros(len(f), int) if strata is None else np.asarray(strata)
    keep = np.isin(labels, [a, b])
    for cls in (a, b):
        if not np.any(labels == cls):
            raise ValueError(f"Invalid value for the class {cls!r}: no window has it (classes "
                             f"present: {sorted(np.unique(labels).tolist())}).")
    f, labels, blocks, strata = f[keep], labels[keep], blocks[keep], strata[keep]
    difference = f[labels == b].mean(0) - f[labels == a].mean(0)  # (C,)
    sd = f.std(0)
    z = (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)  # (N, C): label-free, so still exchangeable

    # one row per block: its label, stratum, feature sum and size
    ub, first, inv = np.unique(blocks, return_index=True, return_inverse=True)
    block_label, block_stratum = labels[first], strata[first]
    if np.any(labels != block_label[inv]) or np.any(strata != block_stratum[inv]):
        raise ValueError("Invalid value for the 'blocks' parameter: the windows of one block "
                         "must share their label and stratum.")
    sums = np.zeros((len(ub), f.shape[1]))
    np.add.at(sums, inv, z)  # (K, C)
    sizes = np.bincount(inv, minlength=len(ub)).astype(float)  # (K,)

    def stat(lab: np.ndarray) -> np.ndarray:
        """|mean_b - mean_a| per channel for block labels ``lab`` (P, K) -> (P, C)."""
        ib, ia = (lab == b).astype(float), (lab == a).astype(float)
        return np.abs(ib @ sums / (ib @ sizes)[:, None] - ia @ sums / (ia @ sizes)[:, None])

    observed = stat(block_label[None])[0]  # (C,)
    rng = np.random.default_rng(seed)
    perm = np.tile(block_label, (n_permutations, 1))  # (P, K)
    for s in np.unique(block_stratum):
        cols = np.flatnonzero(block_stratum == s)
        perm[:, cols] = rng.permuted(perm[:, cols], axis=1)
    null = stat(perm).max(1)  # (P,): the largest channel of each permutation
    p_channels = (1 + (null[:, None] >= observed[None] - 1e-12).sum(0)) / (n_permutations + 1)
    significant = p_channels <= alpha
    return {"difference": difference, "statistic": float(observed.max()),
            "p_value": float(p_channels.min()), "p_channels": p_channels,
            "significant": significant, "n_significant": int(significant.sum()),
            "n_units": len(ub), "n_permutations": n_permutations}
