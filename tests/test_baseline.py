"""The band-power / differential-entropy baseline and its two protocols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from workbench.data.recording import Recording, make_events
from workbench.data.synthetic import make_synthetic_recordings
from workbench.data.windowing import make_windows
from workbench.evaluation.baseline import (
    DEFAULT_BANDS,
    FeatureBaseline,
    band_features,
    band_power,
    cross_subject,
    within_subject,
)

from .conftest import make_recording

FS = 128.0
BAND_NAMES = list(DEFAULT_BANDS)


def _windows(recs):
    """2 s windows with 50 % overlap inside each trial, stacked over recordings."""
    parts = [make_windows(r, window_s=2.0, overlap_s=1.0) for r in recs]
    return (np.concatenate([p[0] for p in parts]),
            pd.concat([p[1] for p in parts], ignore_index=True))


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize("method,rtol", [("welch", 0.05), ("filter", 0.05)])
@pytest.mark.parametrize("freq,band", [(2.5, "delta"), (6.0, "theta"), (11.0, "alpha"),
                                       (22.0, "beta"), (40.0, "gamma")])
def test_sine_power_lands_in_its_band(freq, band, method, rtol):
    amp = 20e-6
    t = np.arange(int(4 * FS)) / FS
    phases = np.array([0.0, 1.0, 2.0])[None, :, None]
    X = amp * np.sin(2 * np.pi * freq * t[None, None] + phases)  # (1, 3, T)
    p = band_power(X, FS, method=method) / (amp**2 / 2)  # the variance of a sine is A^2 / 2
    b = BAND_NAMES.index(band)
    np.testing.assert_allclose(p[..., b], 1.0, rtol=rtol)
    assert np.delete(p, b, axis=-1).max() < 0.05


@pytest.mark.parametrize("method,tol", [("welch", 0.05), ("filter", 0.1)])
def test_de_of_white_noise_matches_closed_form(method, tol):
    sigma = 10e-6
    X = sigma * np.random.default_rng(0).standard_normal((2, 3, int(60 * FS)))
    de = band_features(X, FS, kind="de", method=method).reshape(2, 3, -1)
    # white noise of variance s^2 holds s^2 * width / (fs / 2) in a band of that width
    width = np.array([hi - lo for lo, hi in DEFAULT_BANDS.values()])
    expected = 0.5 * np.log(2 * np.pi * np.e * sigma**2 * width / (FS / 2))
    assert np.abs((de - expected).mean(axis=(0, 1))).max() < tol  # per band, over 6 estimates
    assert np.abs(de - expected).max() < 3 * tol


def test_de_is_affine_in_log_power_and_channel_major():
    t = np.arange(int(2 * FS)) / FS
    rng = np.random.default_rng(1)
    X = 1e-6 * rng.standard_normal((4, 3, len(t)))
    X[:, 1] += 30e-6 * np.sin(2 * np.pi * 10.0 * t)  # alpha on channel 1 only
    de = band_features(X, FS, kind="de")
    logp = band_features(X, FS, kind="logpower")
    assert de.shape == (4, 3 * len(DEFAULT_BANDS))
    np.testing.assert_allclose(de, 0.5 * logp + 0.5 * np.log(2 * np.pi * np.e), rtol=1e-12)
    assert (de.argmax(axis=1) == 1 * len(DEFAULT_BANDS) + BAND_NAMES.index("alpha")).all()


def test_welch_agrees_with_filter_reference_on_eeg():
    recs = make_synthetic_recordings("syn_dreamer", n_subjects=1, n_sessions=1,
                                     n_trials_per_class=4, seed=5)
    X, _ = _windows(recs)
    fast = band_features(X, FS, method="welch")
    ref = band_features(X, FS, method="filter")
    assert np.corrcoef(fast.ravel(), ref.ravel())[0, 1] > 0.9
    assert np.median(np.abs(fast - ref)) < 0.15  # nats


def test_bad_arguments_are_named():
    X = np.zeros((1, 2, 128))
    with pytest.raises(ValueError, match="Nyquist"):
        band_features(X, 64.0)  # gamma 31-49 Hz is above 32 Hz
    with pytest.raises(ValueError, match="'kind'"):
        band_features(X, FS, kind="power")
    with pytest.raises(ValueError, match="sfreq"):
        FeatureBaseline().fit(np.ones((4, 2, 128)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="'classifier'"):
        FeatureBaseline(classifier="knn").fit(np.ones((4, 3)), [0, 1, 0, 1])


# ----------------------------------------------------------------------------- classifier
@pytest.mark.parametrize("classifier", ["logreg", "svm"])
def test_feature_baseline_learns_alpha_and_accepts_features(classifier):
    X_tr, ix_tr = _windows([make_recording(str(s), seed=s) for s in range(2)])
    X_te, ix_te = _windows([make_recording("9", seed=9)])
    model = FeatureBaseline(classifier=classifier, sfreq=FS).fit(X_tr, ix_tr["label"])
    assert (model.predict(X_te) == ix_te["label"]).mean() > 0.9
    # the same model on precomputed features gives the same probabilities
    on_feats = FeatureBaseline(classifier=classifier).fit(band_features(X_tr, FS), ix_tr["label"])
    np.testing.assert_allclose(on_feats.predict_proba(band_features(X_te, FS)),
                               model.predict_proba(X_te), atol=1e-10)


# ----------------------------------------------------------------------------- protocols
def _fingerprint_recording(subject: str, seed: int, n_trials: int = 60, n_ch: int = 12,
                           trial_s: float = 6.0, gap_s: float = 1.0) -> Recording:
    """Random labels; every trial has its own strong spectral fingerprint, unrelated to its label.

    A split that puts windows of one trial on both sides can recognise the trial (and so its
    label); a split by whole trials is at chance.
    """
    rng = np.random.default_rng(seed)
    n = int((n_trials * (trial_s + gap_s) + gap_s) * FS)
    t = np.arange(n) / FS
    data = 2e-6 * rng.standard_normal((n_ch, n))
    onsets = gap_s + np.arange(n_trials) * (trial_s + gap_s)
    labels = rng.permutation(np.arange(n_trials) % 2)
    for onset in onsets:
        m = (t >= onset) & (t < onset + trial_s)
        for f in (6.0, 11.0, 22.0, 40.0):
            amp = 5e-6 * rng.lognormal(0.0, 0.7, (n_ch, 1))
            data[:, m] += amp * np.sin(2 * np.pi * f * t[m] + rng.uniform(0, 2 * np.pi, (n_ch, 1)))
    return Recording(data, FS, [f"E{i}" for i in range(n_ch)], "fingerprint", subject,
                     events=make_events(onsets, trial_s, labels))


def test_within_subject_split_keeps_trials_whole():
    X, index = _windows([_fingerprint_recording(str(s), s) for s in range(4)])
    per_trial = index.groupby(["subject", "trial"]).size()
    assert (per_trial == 5).all()
    res = within_subject(X, index, FS, seeds=(0, 1))
    assert len(res) == 8 and set(res["subject"]) == {"0", "1", "2", "3"}
    # whole trials on each side: 20 % of 60 trials, 5 windows each
    assert (res["n_test"] == 12 * 5).all() and (res["n_train"] == 48 * 5).all()
    # at chance: no trial identity to exploit ...
    assert res["accuracy"].mean() < 0.7
    # ... whereas a window-level split (the leak this protocol avoids) finds the trials
    feats = band_features(X, FS)
    leaky = []
    for subj in ["0", "1", "2", "3"]:
        ids = np.flatnonzero(index["subject"] == subj)
        tr, te = train_test_split(ids, test_size=0.2, random_state=0,
                                  stratify=index["label"].iloc[ids])
        model = FeatureBaseline().fit(feats[tr], index["label"].iloc[tr])
        leaky.append((model.predict(feats[te]) == index["label"].iloc[te]).mean())
    assert np.mean(leaky) > 0.9


@pytest.fixture(scope="module")
def deap_windows():
    recs = make_synthetic_recordings("syn_deap", seed=0)  # smoke size: 4 subjects, 2 sessions
    return _windows(recs)


def test_protocols_on_synthetic_corpus(deap_windows):
    X, index = deap_windows
    within = within_subject(X, index, FS)
    cross = cross_subject(X, index, FS)
    for res in (within, cross):
        assert res["subject"].tolist() == ["01", "02", "03", "04"]
        assert {"dataset", "seed", "protocol", "accuracy", "balanced_accuracy",
                "auroc"} <= set(res.columns)
        assert (res["dataset"] == "syn_deap").all()
    # cross-subject: every window of the held-out subject is tested
    assert cross["n_test"].sum() == len(X)
    assert within["accuracy"].mean() > 0.75
    assert cross["accuracy"].mean() > 0.55  # chance: 0.5
    assert within["accuracy"].mean() > cross["accuracy"].mean() + 0.1
    # precomputed features give the same table
    again = within_subject(band_features(X, FS), index, FS, n_times=X.shape[-1])
    pd.testing.assert_frame_equal(again, within)


def test_protocol_input_errors(deap_windows):
    X, index = deap_windows
    with pytest.raises(ValueError, match="trial"):
        within_subject(X, index.drop(columns="trial"), FS)
    with pytest.raises(ValueError, match="n_times"):
        cross_subject(band_features(X, FS), index, FS)
    with pytest.raises(ValueError, match="rows"):
        within_subject(X[:10], index, FS)


# ----------------------------------------------------------------------------- fairness
def _imbalanced(n: int, seed: int, subject: str, amp: float = 0.15):
    """1 target per 5 non-targets: targets add a weak 10 Hz sine (a shift of about 0.5 SD
    in the alpha DE feature), so an unweighted fit predicts the majority everywhere."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 6 == 0).astype(np.int64)
    t = np.arange(256) / FS
    X = rng.standard_normal((n, 1, 256)) * 10e-6
    X += y[:, None, None] * amp * 10e-6 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (n, 1, 1)))
    index = pd.DataFrame({"dataset": "imb", "subject": subject, "session": "0",
                          "recording": np.arange(n).astype(str), "trial": np.arange(n),
                          "label": y, "start": 0})
    return X, index


def test_balanced_class_weights_beat_the_majority_floor():
    parts = [_imbalanced(1200, s, str(s)) for s in (0, 1)]
    X = np.concatenate([p[0] for p in parts])
    index = pd.concat([p[1] for p in parts], ignore_index=True)
    alpha = {"alpha": (8.0, 12.0)}
    fair = cross_subject(X, index, FS, bands=alpha)  # class_weight="balanced" by default
    plain = cross_subject(X, index, FS, bands=alpha, class_weight=None)
    assert plain["balanced_accuracy"].max() < 0.51      # the majority class everywhere
    assert fair["balanced_accuracy"].min() > 0.54       # measured 0.56-0.61
    with pytest.raises(ValueError, match="class_weight"):
        FeatureBaseline(class_weight="auto").fit(X[:10, :, :], index["label"][:10])


def test_band_features_refuse_nan_naming_window_and_channel():
    X = np.random.default_rng(0).standard_normal((4, 3, 256)) * 1e-5
    X[2, 1, 7] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf samples in window 2 channel 1"):
        band_features(X, FS)


def test_within_subject_flags_one_recording_per_class(caplog):
    """eegmat's layout: each class of each subject is one recording -> confounded."""
    recs = []
    for s in range(3):
        for lab in (0, 1):
            r = make_recording(str(s), n_trials=1, trial_s=40.0, seed=10 * s + lab)
            recs.append(r.replace(events=None, label=lab, recording=f"S{s}_{lab + 1}"))
    X, index = _windows(recs)
    within = within_subject(X, index, FS)
    cross = cross_subject(X, index, FS)
    assert within["confounded"].all() and not cross["confounded"].any()
    assert "can only measure recording identity" in caplog.text
    assert "cross-subject protocol" in caplog.text
    multi = within_subject(*_windows([make_recording(str(s), seed=s) for s in range(3)]), FS)
    assert not multi["confounded"].any()  # several classes per recording (EEGMMIDB-like)
