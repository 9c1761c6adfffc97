import numpy as np
import pytest

from workbench.data.splits import (
    assert_disjoint_subjects,
    assert_no_overlap,
    cross_dataset,
    leave_one_subject_out,
    purge_overlaps,
    subject_kfold,
    within_subject_split,
)
from workbench.data.store import build_store

from .conftest import make_recording


@pytest.fixture
def store(tmp_path):
    recs = [make_recording(str(s), seed=s, n_trials=10) for s in range(4)]
    return build_store(recs, tmp_path / "s", window_s=2.0, overlap_s=1.5)


def test_within_subject_keeps_trials_on_one_side(store):
    splits = within_subject_split(store.index, store.n_times, test_size=0.2, val_size=0.1, seed=0)
    assert len(splits) == 4
    idx = store.index
    for sp in splits:
        key = idx["subject"] + "/" + idx["trial"].astype(str)
        tr, te, va = (set(key.iloc[s]) for s in (sp.train, sp.test, sp.val))
        assert not (tr & te) and not (va & te) and not (tr & va)
        assert set(idx["subject"].iloc[np.concatenate([sp.train, sp.test])]) == {sp.subject}
        assert set(idx["label"].iloc[sp.test]) == {0, 1}  # stratified
        assert 0.1 < len(sp.test) / (len(sp.train) + len(sp.test) + len(sp.val)) < 0.35


def test_within_subject_seed_changes_split(store):
    a = within_subject_split(store.index, store.n_times, seed=0)[0].test
    b = within_subject_split(store.index, store.n_times, seed=0)[0].test
    c = within_subject_split(store.index, store.n_times, seed=5)[0].test
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_single_long_segment_is_blocked_and_purged(tmp_path):
    # one continuous recording per class (like eegmat rest vs arithmetic), overlapping windows
    recs = []
    for lab in (0, 1):
        r = make_recording("1", n_trials=1, trial_s=60.0)
        recs.append(r.replace(events=None, label=lab, recording=str(lab)))
    store = build_store(recs, tmp_path / "s", window_s=2.0, overlap_s=1.0, within_events=False)
    sp = within_subject_split(store.index, store.n_times, test_size=0.2, seed=1)[0]
    assert len(sp.test) > 0 and len(sp.train) > 0
    assert_no_overlap(store.index, sp.train, sp.test, store.n_times)
    # without purging, adjacent blocks would share samples: the check must catch it
    naive_train = np.setdiff1d(np.arange(len(store)), sp.test)
    with pytest.raises(AssertionError, match="share samples"):
        assert_no_overlap(store.index, naive_train, sp.test, store.n_times)


def test_purge_overlaps_by_hand(store):
    idx = store.index
    # windows 0,1,2 of the same trial start 0, 64, 128 samples (stride 0.5 s @128 Hz), T=256
    keep = purge_overlaps(idx, np.array([0, 1, 2, 12]), np.array([3]), store.n_times)
    assert keep.tolist() == [12]


def test_subject_kfold_and_loso(store):
    folds = subject_kfold(store.index, k=2, seed=0)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(store)))
    for f in folds:
        assert_disjoint_subjects(store.index, f.train, f.test)
    loso = leave_one_subject_out(store.index)
    assert [s.subject for s in loso] == ["0", "1", "2", "3"]
    with pytest.raises(AssertionError, match="both sides"):
        assert_disjoint_subjects(store.index, np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="'k'"):
        subject_kfold(store.index, k=9)


def test_cross_dataset(store):
    sp = cross_dataset(store.index.assign(dataset=np.where(store.index.subject == "0", "b", "a")),
                       ["a"], "b")
    assert len(sp.test) == (store.index.subject == "0").sum()
    with pytest.raises(ValueError, match="both"):
        cross_dataset(store.index, ["toy"], "toy")


def test_same_subject_name_in_two_datasets_is_two_subjects(store):
    idx = store.index.assign(dataset=np.where(np.arange(len(store)) % 2 == 0, "a", "b"))
    loso = leave_one_subject_out(idx)
    assert len(loso) == 8 and loso[0].subject == "a/0"
    for sp in loso:
        assert_disjoint_subjects(idx, sp.train, sp.test)
    ws = within_subject_split(idx, store.n_times, seed=0)
    assert {s.subject for s in ws} == {f"{d}/{k}" for d in "ab" for k in "0123"}
