"""Readers on the real recordings in ``../shared/data`` (skipped when the folder is absent).

The folder is ``$WORKBENCH_SHARED_DATA`` or ``<repo>/../shared/data``. Expected counts were
measured on these files (see ``/work/shared/data/README.md`` for their provenance).
"""

from __future__ import annotations

import mne
import numpy as np
import pandas as pd
import pytest

from workbench.channels import normalize_channel_name
from workbench.data.readers import check_dataset, read_dataset
from workbench.data.readers.generic import read_edf_header

from .conftest import shared_data_dir

pytestmark = pytest.mark.realdata


def data_dir(name: str):
    root = shared_data_dir()
    if root is None or not (root / name).exists():
        pytest.skip(f"real data folder {name} not present (../shared/data or "
                    "$WORKBENCH_SHARED_DATA)")
    return root / name


def test_eegmmidb_s001_imagined_left_right_fist():
    res = read_dataset("eegmmidb", data_dir("eegmmidb"), task="imagery_lr")
    assert res.failures.empty
    assert [r.recording for r in res.recordings] == ["R04", "R08", "R12"]
    ev = pd.concat([r.events for r in res.recordings])
    trials = ev[ev.label >= 0]
    assert len(trials) == 45
    assert trials.label.value_counts().to_dict() == {0: 23, 1: 22}
    assert (ev.label == -1).sum() == 45  # T0 rest periods between the trials
    assert set(trials.description) == {"left_fist", "right_fist"}
    r = res.recordings[0]
    assert r.sfreq == 160.0 and r.n_times == 20000 and r.subject == "S001"
    assert len(r.ch_names) == 64 and len(set(r.ch_names)) == 64
    assert all(normalize_channel_name(c) == c for c in r.ch_names)
    assert r.ch_names[:4] == ["FC5", "FC3", "FC1", "FCz"] and r.ch_names[-1] == "Iz"
    assert 1e-5 < np.abs(r.data).max() < 1e-2  # volts, not microvolts


def test_eegmmidb_s001_four_class_and_baseline():
    res = read_dataset("eegmmidb", data_dir("eegmmidb"), task="4class")
    ev = pd.concat([r.events for r in res.recordings])
    assert ev[ev.label >= 0].label.value_counts().sort_index().to_dict() == {
        0: 23, 1: 22, 2: 21, 3: 24}
    base = read_dataset("eegmmidb", data_dir("eegmmidb"), task="baseline").recordings
    assert [(r.recording, r.label, r.duration) for r in base] == [("R01", 0, 60.0),
                                                                  ("R02", 1, 60.0)]


def test_eegmat_twelve_subjects_two_conditions():
    res = read_dataset("eegmat", data_dir("eegmat"))
    assert res.failures.empty and len(res) == 24
    pairs = {(r.subject, r.label) for r in res.recordings}
    assert len({s for s, _ in pairs}) == 12 and pairs == {
        (f"Subject{s:02d}", y) for s in range(12) for y in (0, 1)}
    for r in res.recordings:
        assert r.sfreq == 500.0
        assert r.label == (0 if r.recording.endswith("_1") else 1)
        assert r.ch_types.count("eeg") == 19
        types = dict(zip(r.ch_names, r.ch_types))
        assert types["EEG A2-A1"] == "misc" and types["ECG ECG"] == "ecg"
        assert {"T7", "T8", "P7", "P8", "Fp1", "Pz"} <= set(r.ch_names)
    durations = {(r.label, r.duration) for r in res.recordings}
    assert {d for y, d in durations if y == 1} == {62.0}
    assert {d for y, d in durations if y == 0} == {170.0, 182.0, 188.0}
    s0 = [r for r in res.recordings if r.subject == "Subject00"][0]
    assert s0.meta["subject_info"]["Count quality"] == 0


def test_eeglab_sample_through_the_generic_reader():
    f = data_dir("eeglab_sample") / "eeglab_data.set"
    res = read_dataset("generic", f, event_labels={"square": 0, "rt": 1})
    r = res.recordings[0]
    assert r.sfreq == 128.0 and r.n_times == 30504 and len(r.ch_names) == 32
    assert r.ch_types.count("eeg") == 30
    assert [c for c, t in zip(r.ch_names, r.ch_types) if t == "eog"] == ["EOG1", "EOG2"]
    assert r.ch_names[0] == "Fpz"
    assert r.events.description.value_counts().to_dict() == {"square": 80, "rt": 74}
    assert r.events.label.value_counts().to_dict() == {0: 80, 1: 74}


def test_uci_eye_state_runs_and_outliers():
    d = data_dir("uci_eye_state")
    r = read_dataset("uci_eye_state", d).recordings[0]
    assert r.sfreq == 128.0 and r.n_times == 14980 and len(r.ch_names) == 14
    runs = r.events[r.events.label >= 0]
    assert len(runs) == 24
    samples = (runs.duration * 128).round().groupby(runs.label).sum().to_dict()
    assert samples == {0: 8257, 1: 6723}
    out = r.meta["outliers"]
    assert out["samples"] == [898, 10386, 11509, 13179] and out["max_abs_uV"] == 715897.0
    dev = np.abs(r.data - np.median(r.data, axis=1, keepdims=True))
    assert dev.max() < 300e-6  # interpolated: no 1e5 uV spike survives
    kept = read_dataset("uci_eye_state", d, outliers="keep").recordings[0]
    assert np.abs(kept.data).max() == pytest.approx(0.715897, rel=1e-6)


def test_check_dataset_on_the_real_folders():
    t = check_dataset("eegmmidb", data_dir("eegmmidb"))
    assert (t.status == "ok").sum() == 14  # all runs of S001 checked, headers only
    assert (t.status == "missing").sum() == 108  # subjects S002-S109, one row each
    t = check_dataset("eegmat", data_dir("eegmat"))
    assert (t.status == "ok").sum() == 24 and (t.status == "missing").sum() == 24
    assert "21 channels, [500.0] Hz, 182 s" in t.message.tolist()


def test_edf_header_parser_agrees_with_mne():
    """The header-only parser used by ``check`` (fast path) against MNE's full reader."""
    files = sorted(data_dir("eegmmidb").rglob("*.edf"))[:4] + sorted(
        data_dir("eegmat").glob("*.edf"))[:2]
    for f in files:
        hdr = read_edf_header(f)
        hdr.check_complete()
        raw = mne.io.read_raw_edf(f, verbose="error")
        assert [hdr.labels[i] for i in hdr.signal_idx] == raw.ch_names
        assert set(hdr.sfreqs) == {raw.info["sfreq"]}
        assert round(hdr.duration * raw.info["sfreq"]) == raw.n_times
        assert hdr.file_bytes == hdr.expected_bytes
