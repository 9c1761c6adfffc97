"""load_store: resampling on every path (also the synthetic corpus), labels tables, and the
subjects a profile leaves out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.config import Profile
from workbench.data.corpus import load_store

from .test_device_csv import write_muse

TINY = Profile(name="tiny", synthetic_subjects=2, synthetic_sessions=1, synthetic_trials=2,
               synthetic_trial_s=4.0, max_subjects=None)


def test_synthetic_store_resampled_to_200_hz(tmp_path):
    native = load_store("syn_dreamer", profile=TINY, cache_dir=tmp_path)
    up = load_store("syn_dreamer", profile=TINY, cache_dir=tmp_path, sfreq=200.0)
    assert native.sfreq == 128.0 and up.sfreq == 200.0 and up.n_times == 400
    assert up.root != native.root                      # the rate is part of the cache key
    assert len(up) == len(native)
    np.testing.assert_allclose(up.index["start_s"], native.index["start_s"], atol=1 / 128)
    np.testing.assert_allclose(np.asarray(up.windows).var(), np.asarray(native.windows).var(),
                               rtol=0.05)
    again = load_store("syn_dreamer", profile=TINY, cache_dir=tmp_path, sfreq=200.0)
    assert again.root == up.root                       # served from the cache


def test_labels_table_and_subject_cap(tmp_path):
    data = tmp_path / "muse"
    for s in range(3):
        write_muse(data / f"s{s}.csv", seed=s, seconds=8.0)
    table = pd.DataFrame({"file": ["s0", "s0", "s1", "s1", "s2", "s2"],
                          "onset": [1.0, 4.0] * 3, "duration": 2.0, "label": [0, 1] * 3})
    table.to_csv(tmp_path / "labels.csv", index=False)
    store = load_store("csv", data_path=str(data), labels=tmp_path / "labels.csv",
                       profile=TINY, window_s=1.0, cache_dir=tmp_path / "c")
    assert store.labels.tolist() == [0, 0, 1, 1] * 3 and store.sfreq == 256.0
    capped = load_store("csv", data_path=str(data), labels=tmp_path / "labels.csv",
                        profile=Profile(max_subjects=2), window_s=1.0, cache_dir=tmp_path / "c")
    assert capped.meta["provenance"]["subjects"] == {"used": 2, "available": 3}
    with pytest.raises(FileNotFoundError, match="labels"):
        load_store("csv", data_path=str(data), labels=tmp_path / "nope.csv",
                   cache_dir=tmp_path / "c")
