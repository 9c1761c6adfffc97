"""Real recordings of two devices in one folder (../shared/data, skipped when absent): eegmat
(19 EEG at 500 Hz) and EEGMMIDB (64 EEG at 160 Hz) through the generic reader give one store at
one rate with the channels they share, never an abort; the CSV reader reads a table written
from a real recording back to the same samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.data.preprocess import get_recipe, run_pipeline
from workbench.data.readers import get_reader

pytestmark = pytest.mark.realdata


def _folder(shared_data, tmp_path):
    files = [shared_data / "eegmat" / "Subject00_2.edf", shared_data / "eegmmidb" / "S001" /
             "S001R04.edf"]
    if not all(f.exists() for f in files):
        pytest.skip("eegmat / eegmmidb files not present")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in files:  # links, never copies, of the shared files
        (folder / f.name).symlink_to(f)
    return folder


def test_mixed_rates_and_layouts_in_one_folder(shared_data, tmp_path):
    folder = _folder(shared_data, tmp_path)
    native = run_pipeline(dataset="generic", data_path=folder, cfg="minimal",
                          out_dir=tmp_path / "native")
    # one store at the first file's rate; the other file is a reported failure, not an abort
    assert native.store is not None and len(native.failures) == 1
    assert (tmp_path / "native" / "failures.csv").exists()
    cfg = get_recipe("minimal", resample=160.0, channel_policy="intersection")
    res = run_pipeline(dataset="generic", data_path=folder, cfg=cfg, out_dir=tmp_path / "both")
    assert res.failures.empty and res.store.sfreq == 160.0
    assert sorted(res.store.index["dataset"].unique()) == ["generic"]
    assert res.store.index["recording"].nunique() == 2
    assert set(res.store.ch_names) >= {"Fp1", "Cz", "O2"} and len(res.store.ch_names) <= 19


def test_csv_reader_round_trip_of_a_real_recording(shared_data, tmp_path):
    f = shared_data / "eegmat" / "Subject00_2.edf"
    if not f.exists():
        pytest.skip("eegmat not present")
    (rec,) = get_reader("eegmat").read_file(f)
    eeg = rec.eeg_picks[:4]
    n = 5000  # 10 s
    t = 1_600_000_000.0 + np.arange(n) / rec.sfreq
    table = pd.DataFrame({"timestamps": t, **{rec.ch_names[i]: rec.data[i, :n] * 1e6
                                              for i in eeg}, "Marker": 0})
    table.to_csv(tmp_path / "rec.csv", index=False, float_format="%.4f")
    (back,) = get_reader("csv").read_file(tmp_path / "rec.csv")
    assert back.sfreq == 500.0 and back.ch_names == [rec.ch_names[i] for i in eeg]
    np.testing.assert_allclose(back.data, rec.data[eeg, :n], atol=1e-10)
