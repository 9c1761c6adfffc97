"""Protocols: each fold asserts its leakage rule; fixed subject lists; the recording confound."""

import numpy as np
import pandas as pd
import pytest

from workbench.data.splits import fixed_subject_split
from workbench.evaluation.protocols import Protocol, make_splits


def _index(n_subjects=6, recordings_per_class=False):
    rows = []
    for s in range(1, n_subjects + 1):
        for trial in range(8):
            label = trial % 2
            rec = f"r{label}" if recordings_per_class else "r0"
            for w in range(3):
                rows.append({"dataset": "d", "subject": f"{s:02d}", "session": "1",
                             "recording": rec, "trial": trial, "label": label,
                             "start": trial * 1000 + w * 100})
    return pd.DataFrame(rows)


def _subjects(index, ids):
    return set(index["subject"].iloc[ids])


@pytest.mark.parametrize("name", ["subject_kfold", "loso"])
def test_subject_protocols_keep_subjects_apart(name):
    index = _index()
    splits = make_splits(Protocol(name, folds=3, val_size=0.25), index, 100, seed=0)
    assert len(splits) == (3 if name == "subject_kfold" else 6)
    tested = set()
    for sp in splits:
        tr, va, te = (_subjects(index, getattr(sp, k)) for k in ("train", "val", "test"))
        assert tr and te and va and not (tr & te) and not (va & te) and not (tr & va)
        assert len(sp.train) + len(sp.val) + len(sp.test) == len(index)
        tested |= te
    assert tested == set(index["subject"])  # every subject tested once


def test_fixed_subject_split_and_its_errors():
    index = _index()
    sp = fixed_subject_split(index, ["1", "02", "03"], ["06"], val=["4", "05"])
    assert _subjects(index, sp.train) == {"01", "02", "03"}
    assert _subjects(index, sp.val) == {"04", "05"} and _subjects(index, sp.test) == {"06"}
    named = index.assign(subject="Subject" + index["subject"])  # eegmat's names
    sp = fixed_subject_split(named, ["01", "2"], ["6"])
    assert _subjects(named, sp.train) == {"Subject01", "Subject02"}
    assert _subjects(named, sp.test) == {"Subject06"}
    with pytest.raises(ValueError, match="both the train and the test"):
        fixed_subject_split(index, ["01", "02"], ["2"])
    with pytest.raises(ValueError, match="test_subjects.*'99'"):
        fixed_subject_split(index, ["01"], ["99"])
    with pytest.raises(ValueError, match="needs 'train_subjects'"):
        Protocol("fixed")
    assert len(make_splits(Protocol("fixed", train_subjects=["01"], test_subjects=["02"]),
                           index, 100)) == 1


def test_max_folds_and_subject_restriction_map_back_to_store_ids():
    index = _index()
    splits = make_splits(Protocol("within_subject", max_folds=2), index, 100, seed=1,
                         subjects=["03", "05"])
    assert [sp.subject for sp in splits] == ["03", "05"]
    for sp in splits:
        assert _subjects(index, np.concatenate([sp.train, sp.test])) == {sp.subject}


def test_driver_folds_flag_one_recording_per_class():
    """Every protocol fold is checked with :func:`workbench.evaluation.honesty.recording_confound`
    (tested in test_honesty.py); here: the flag reaches the results table."""
    from workbench.evaluation.honesty import recording_confound

    flat = _index(recordings_per_class=True)
    sp = make_splits(Protocol("within_subject"), flat, 100, seed=0)[0]
    assert recording_confound(flat, sp.train, sp.test).confounded
    sp = make_splits(Protocol("loso"), flat, 100)[0]
    assert not recording_confound(flat, sp.train, sp.test).confounded
