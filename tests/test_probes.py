"""Probes weight classes (``balanced`` by default) so that a minority class is not ignored,
and refuse non-finite features."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.evaluation.probes import channel_statistics, linear_probe, mlp_probe


def _imbalanced(n: int, seed: int, shift: float = 0.5):
    """One feature, 1 positive per 5 negatives, positives shifted by ``shift`` SD."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 6 == 0).astype(int)
    return rng.standard_normal((n, 1)) + shift * y[:, None], y


@pytest.mark.parametrize("probe,kw", [(linear_probe, {}),
                                      (mlp_probe, {"hidden": (4, 4), "max_iter": 200})])
def test_balanced_probe_beats_the_majority_floor(probe, kw):
    Xtr, ytr = _imbalanced(1200, 0)
    Xte, yte = _imbalanced(1200, 1)
    fair = probe(Xtr, ytr, Xte, yte, **kw)
    plain = probe(Xtr, ytr, Xte, yte, class_weight=None, **kw)
    assert plain.metrics["balanced_accuracy"] < 0.52   # (almost) always the majority class
    assert fair.metrics["balanced_accuracy"] > 0.56
    assert 0.2 < fair.pred.mean() < 0.8
    with pytest.raises(ValueError, match="class_weight"):
        probe(Xtr, ytr, Xte, class_weight="auto", **kw)


def test_channel_statistics_refuse_nan():
    x = np.zeros((2, 3, 10))
    x[1, 2, 4] = np.nan
    with pytest.raises(ValueError, match="window 1 channel 2"):
        channel_statistics(x)
