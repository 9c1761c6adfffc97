"""Power spectra of windows: per-group mean PSDs, class-difference band-power maps, and the
class difference of waveform skewness (what band power cannot show)."""

from __future__ import annotations

from collections.abc import Sequence

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


def class_band_difference(x: np.ndarray, labels: np.ndarray, sfreq: float,
                          band: tuple[float, float], a: int, b: int) -> np.ndarray:
    """Per-channel difference of mean log10 band power, class ``b`` minus class ``a`` (C,)."""
    from ..evaluation.baseline import band_power

    bp = np.log10(band_power(x, sfreq, {"band": band})[..., 0])  # (N, C)
    return bp[labels == b].mean(0) - bp[labels == a].mean(0)


def class_skewness_difference(x: np.ndarray, labels: np.ndarray, sfreq: float,
                              band: tuple[float, float], a: int, b: int) -> np.ndarray:
    """Per-channel difference of mean skewness, class ``b`` minus class ``a`` (C,).

    Each window (N, C, T) is band-passed to ``band`` (4th-order Butterworth, zero phase)
    first. Skewness is a third-order statistic: it tells sharp peaks from sharp troughs, a
    waveform-shape difference that leaves every power spectrum, hence every band-power
    feature, unchanged. Shape effects differ between subjects; compare within one subject.
    """
    lo, hi = band
    if not 0 < lo < hi < sfreq / 2:
        raise ValueError(f"Invalid value for the 'band' parameter: expected 0 < low < high < "
                         f"{sfreq / 2:g} Hz (Nyquist), got {band}.")
    sos = butter(4, [lo, hi], btype="bandpass", fs=sfreq, output="sos")
    sk = skew(sosfiltfilt(sos, np.asarray(x, dtype=np.float64), axis=-1), axis=-1)  # (N, C)
    return sk[labels == b].mean(0) - sk[labels == a].mean(0)
