"""Evaluation honesty: splits that can only measure recording identity are flagged; layouts
with several classes per recording (EEGMMIDB) and cross-subject splits are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.data.splits import leave_one_subject_out, within_subject_split
from workbench.data.windowing import make_windows
from workbench.evaluation.honesty import recording_confound

from .conftest import shared_data_dir


def _index(recordings: list[str], labels: list[int], subject: str = "1") -> pd.DataFrame:
    return pd.DataFrame({"dataset": "d", "subject": subject, "session": "0",
                         "recording": recordings, "label": labels})


def test_one_recording_per_class_is_confounded_by_hand():
    index = _index(["A"] * 5 + ["B"] * 5, [0] * 5 + [1] * 5)
    res = recording_confound(index, [0, 1, 2, 5, 6, 7], [3, 4, 8, 9])
    assert res.confounded and res.fraction == pytest.approx(1.0)
    assert res.recordings == ("d/1/0/A", "d/1/0/B")
    assert "recording identity" in res.reason and "cross-subject" in res.reason
    # recording B never trained on: half the test windows can be shortcut
    half = recording_confound(index, [0, 1, 2], [3, 4, 8, 9])
    assert not half.confounded and half.fraction == pytest.approx(0.5)
    assert recording_confound(index, [0, 1, 2], [3, 4, 8, 9], threshold=0.5).confounded


def test_several_classes_per_recording_and_unlabelled_windows():
    index = _index(["A"] * 6 + ["B"] * 6, [0, 1, -1] * 4)
    res = recording_confound(index, np.arange(0, 6), np.arange(6, 12))
    assert not res.confounded and res.fraction == 0.0
    # unlabelled windows do not make a recording "several classes"
    index = _index(["A"] * 4 + ["B"] * 4, [0, 0, -1, 0, 1, 1, -1, 1])
    assert recording_confound(index, [0, 1, 4, 5], [2, 3, 6, 7]).confounded
    assert recording_confound(index, [0, 1], [2]).reason == "no labelled test windows"


def test_bad_arguments_are_named():
    index = _index(["A", "B"], [0, 1])
    with pytest.raises(ValueError, match="'test'.*positions"):
        recording_confound(index, [0], [5])
    with pytest.raises(ValueError, match="label"):
        recording_confound(index.drop(columns="label"), [0], [1])
    with pytest.raises(ValueError, match="threshold"):
        recording_confound(index, [0], [1], threshold=0.0)


def _flags(recs, n_times):
    parts = [make_windows(r, window_s=n_times / recs[0].sfreq) for r in recs]
    index = pd.concat([p[1] for p in parts], ignore_index=True)
    within = [recording_confound(index, s.train, s.test).confounded
              for s in within_subject_split(index, n_times, seed=0)]
    cross = [recording_confound(index, s.train, s.test).confounded
             for s in leave_one_subject_out(index)]
    return within, cross


@pytest.mark.realdata
def test_real_eegmat_is_flagged_and_eegmmidb_is_not():
    from workbench.data.readers import read_dataset

    root = shared_data_dir()
    if root is None or not (root / "eegmat").exists() or not (root / "eegmmidb").exists():
        pytest.skip("real data folders eegmat/eegmmidb not present")
    eegmat = read_dataset("eegmat", root / "eegmat", subjects=[0, 1]).recordings
    within, cross = _flags(eegmat, 1000)  # 2 s windows at 500 Hz
    assert len(within) == 2 and all(within) and not any(cross)
    mi = read_dataset("eegmmidb", root / "eegmmidb", task="imagery_lr").recordings
    mi = mi + [r.replace(subject="S002") for r in mi]  # a second "subject" for the cross split
    within, cross = _flags(mi, 320)  # 2 s windows at 160 Hz
    assert within and not any(within) and not any(cross)
