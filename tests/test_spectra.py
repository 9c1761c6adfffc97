"""Spectral summaries: band-power class differences see power, skewness differences see shape."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.spectra import class_band_difference, class_skewness_difference

FS = 128.0


def _waves(sign: float, n: int = 40, amp: float = 1.0, seed: int = 0) -> np.ndarray:
    """(n, 2, 256) windows: channel 0 a 10 Hz rhythm with a phase-locked harmonic whose sign
    sets sharp peaks (+1) or sharp troughs (-1); channel 1 noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(256) / FS
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x0 = amp * (np.cos(2 * np.pi * 10 * t + phase) + sign * 0.6 * np.cos(2 * (2 * np.pi * 10 * t + phase)))
    x = np.stack([x0, rng.standard_normal((n, 256))], axis=1)
    return x + 0.1 * rng.standard_normal(x.shape)


def test_skewness_sees_shape_band_power_does_not():
    x = np.concatenate([_waves(+1.0), _waves(-1.0, seed=1)])
    y = np.repeat([0, 1], 40)
    skew = class_skewness_difference(x, y, FS, (6.0, 30.0), 0, 1)
    power = class_band_difference(x, y, FS, (8.0, 12.0), 0, 1)
    assert skew.shape == power.shape == (2,)
    assert skew[0] < -1.0 and abs(skew[1]) < 0.3  # peaks -> troughs on channel 0 only
    assert np.abs(power).max() < 0.05  # the same spectrum


def test_band_power_sees_amplitude():
    x = np.concatenate([_waves(+1.0), _waves(+1.0, amp=2.0, seed=1)])
    y = np.repeat([0, 1], 40)
    power = class_band_difference(x, y, FS, (8.0, 12.0), 0, 1)
    assert power[0] == pytest.approx(np.log10(4.0), abs=0.05)


def test_skewness_band_is_checked():
    x, y = _waves(1.0), np.zeros(40, int)
    with pytest.raises(ValueError, match="band.*Nyquist"):
        class_skewness_difference(x, y, FS, (6.0, 80.0), 0, 1)
