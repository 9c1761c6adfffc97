"""Power spectra of windows: per-group mean PSDs and class-difference band-power maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.signal import welch


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
