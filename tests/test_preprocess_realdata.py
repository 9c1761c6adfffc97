"""The preprocessing pipeline on real recordings from ../shared/data (skipped when absent):
ICA + ICLabel removes the eye-blink component of the EEGLAB sample, and the full eegmat
preprocessing (12 subjects) finishes and is served from the cache on a second run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workbench.data.preprocess import get_recipe, preprocess_recording, run_pipeline
from workbench.data.readers import get_reader

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_eeglab_sample_blink_component_excluded(shared_data):
    folder = shared_data / "eeglab_sample"
    if not folder.is_dir():
        pytest.skip("eeglab_sample not in the shared data")
    reader = get_reader("generic")
    rec = reader.read_file(reader.list_files(folder)[0])[0]
    assert rec.ch_types.count("eog") == 2  # EOG1/EOG2 stay out of the EEG picks
    clean, rep = preprocess_recording(rec, "omfa")
    print(f"\nEEGLAB sample: {rep.n_components} components; excluded "
          + ", ".join(f"IC{c} {lab} ({t['probability']:.2f})" for c, lab, t in
                      zip(rep.excluded, rep.excluded_labels,
                          [rep.ica_labels[c] for c in rep.excluded])))
    assert "eye blink" in rep.excluded_labels
    blink = [t for t in rep.ica_labels if t["label"] == "eye blink"]
    assert max(t["probability"] for t in blink) > 0.8
    assert clean.ch_names == [n for n, t in zip(rec.ch_names, rec.ch_types) if t == "eeg"]
    # the frontal channel loses most of its slow (blink-band) power, posterior ones do not
    def low_power(x, name):
        f = np.fft.rfftfreq(x.shape[1], 1 / 128)
        p = np.abs(np.fft.rfft(x[clean.ch_names.index(name)])) ** 2
        return p[(f > 1) & (f < 4)].sum()

    raw, _ = preprocess_recording(rec, get_recipe("omfa", ica=False))
    assert low_power(clean.data, "Fpz") < 0.5 * low_power(raw.data, "Fpz")


def test_eegmat_full_preprocessing_then_cache(shared_data, tmp_path):
    folder = shared_data / "eegmat"
    if not folder.is_dir():
        pytest.skip("eegmat not in the shared data")
    t0 = time.perf_counter()
    first = run_pipeline(dataset="eegmat", data_path=folder, cfg="omfa", out_dir=tmp_path,
                         n_jobs=2)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = run_pipeline(dataset="eegmat", data_path=folder, cfg="omfa", out_dir=tmp_path,
                          n_jobs=2)
    t_second = time.perf_counter() - t0
    print(f"\neegmat omfa: first run {t_first:.1f} s ({len(first.reports)} recordings, "
          f"{len(first.store)} windows), cached rerun {t_second:.1f} s")
    assert first.failures.empty, first.failures
    assert len(first.reports) == 24 and first.reports["subject"].nunique() == 12
    assert not first.reports["from_cache"].any() and second.reports["from_cache"].all()
    assert first.store.sfreq == 500.0 and len(first.store.ch_names) == 19
    assert sorted(np.unique(first.store.labels)) == [0, 1]
    np.testing.assert_array_equal(np.asarray(first.store.windows[:50]),
                                  np.asarray(second.store.windows[:50]))
    assert t_second < 30.0 and t_second < 0.25 * t_first
