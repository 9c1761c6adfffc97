"""The class-difference permutation test of the 00_data topomaps: a planted difference is found
on its channel, shuffled labels are not, and trials and subjects are respected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.spectra import (
    class_band_difference,
    class_difference_significance,
    log_band_power,
    trial_blocks,
)


def _planted(n: int = 120, c: int = 8, effect: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    f = rng.standard_normal((n, c))
    f[labels == 1, 2] += effect  # class 1 is higher on channel 2 only
    return f, labels


def test_planted_difference_is_found_on_its_channel_and_shuffled_is_not():
    f, labels = _planted()
    res = class_difference_significance(f, labels, 0, 1, n_permutations=500)
    assert res["p_value"] == pytest.approx(1 / 501)  # no permutation reaches it
    assert res["significant"][2] and res["n_significant"] == 1
    np.testing.assert_allclose(res["difference"], f[labels == 1].mean(0) - f[labels == 0].mean(0),
                               rtol=1e-12, atol=1e-12)
    shuffled = np.random.default_rng(1).permutation(labels)
    null = class_difference_significance(f, shuffled, 0, 1, n_permutations=500)
    assert null["p_value"] > 0.05 and null["n_significant"] == 0


def test_p_value_is_calibrated_under_the_null():
    # the max-statistic controls the family-wise error: about alpha of null maps are "significant"
    hits = [class_difference_significance(*_planted(effect=0.0, seed=s), 0, 1,
                                          n_permutations=200, seed=s)["p_value"] <= 0.05
            for s in range(40)]
    assert np.mean(hits) <= 0.15


def test_windows_of_one_trial_move_together():
    # overlapping windows of a trial share a trial-level offset; with no class effect, treating
    # them as independent finds "differences" far more often than the trial-level test does
    rng = np.random.default_rng(0)
    window_level, trial_level = [], []
    for s in range(20):
        trials, per = 16, 6
        offset = rng.standard_normal((trials, 4)) * 2.0
        f = np.repeat(offset, per, axis=0) + 0.3 * rng.standard_normal((trials * per, 4))
        labels = np.repeat(np.arange(trials) % 2, per)
        blocks = np.repeat(np.arange(trials), per)
        window_level.append(class_difference_significance(
            f, labels, 0, 1, n_permutations=200, seed=s)["p_value"] <= 0.05)
        trial_level.append(class_difference_significance(
            f, labels, 0, 1, blocks=blocks, n_permutations=200, seed=s)["p_value"] <= 0.05)
    assert np.mean(window_level) >= 0.5 and np.mean(trial_level) <= 0.2


def test_strata_keep_a_subject_offset_from_looking_like_a_class_effect():
    # subject 1 is higher everywhere and holds most class-1 windows: pooled labels confound the
    # two; permuting within subjects does not
    rng = np.random.default_rng(0)
    subj = np.repeat([0, 1], 60)
    labels = np.concatenate([np.r_[np.zeros(50), np.ones(10)], np.r_[np.zeros(10), np.ones(50)]])
    f = rng.standard_normal((120, 5)) + 2.0 * subj[:, None]
    pooled = class_difference_significance(f, labels, 0, 1, n_permutations=300)
    within = class_difference_significance(f, labels, 0, 1, strata=subj, n_permutations=300)
    assert pooled["p_value"] < 0.01 and within["p_value"] > 0.05


def test_band_power_map_matches_the_topomap_values():
    rng = np.random.default_rng(0)
    fs, n = 128.0, 40
    t = np.arange(256) / fs
    x = rng.standard_normal((n, 3, 256))
    labels = np.repeat([0, 1], n // 2)
    x[labels == 1, 0] += 3 * np.sin(2 * np.pi * 10 * t)  # more alpha on channel 0
    bp = log_band_power(x, fs, (8.0, 14.0))
    res = class_difference_significance(bp, labels, 0, 1, n_permutations=200)
    np.testing.assert_allclose(res["difference"],
                               class_band_difference(x, labels, fs, (8.0, 14.0), 0, 1),
                               rtol=1e-10, atol=1e-12)
    assert res["significant"].tolist() == [True, False, False]


def test_trial_blocks_and_checks():
    index = pd.DataFrame({"subject": ["1", "1", "1", "2"], "session": [0, 0, 0, 0],
                          "trial": [0, 0, 1, 0]})
    assert trial_blocks(index).tolist() == [0, 0, 1, 2]
    f, labels = _planted(n=8, c=3)
    with pytest.raises(ValueError, match="class 5"):
        class_difference_significance(f, labels, 0, 5)
    with pytest.raises(ValueError, match="blocks"):
        class_difference_significance(f, labels, 0, 1, blocks=np.zeros(8, int))
    with pytest.raises(ValueError, match="features"):
        class_difference_significance(f[:, 0], labels, 0, 1)
