"""The synthetic corpus: layouts, determinism, labels, artifacts, speed and a learnable class effect."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import signal, stats

from workbench.channels import SEED_62, ChannelVocabulary, channel_positions
from workbench.data.synthetic import (
    SYNTHETIC_DATASETS,
    SignalModel,
    make_synthetic_corpus,
    make_synthetic_recordings,
)
from workbench.data.windowing import make_windows
from workbench.evaluation.baseline import within_subject

SMALL = {"n_subjects": 2, "n_sessions": 2, "n_trials_per_class": 3}


def _windows(recs):
    """2 s windows with 50 % overlap inside each trial, stacked over recordings."""
    parts = [make_windows(r, window_s=2.0, overlap_s=1.0) for r in recs]
    return (np.concatenate([p[0] for p in parts]),
            pd.concat([p[1] for p in parts], ignore_index=True))


@pytest.fixture(scope="module")
def small_corpus():
    return make_synthetic_corpus(**SMALL, seed=3)


def test_layouts_rates_and_names(small_corpus):
    expected = {"syn_seed": (62, 200.0, 3), "syn_deap": (32, 128.0, 2),
                "syn_dreamer": (14, 128.0, 2)}
    assert set(small_corpus) == set(expected)
    for name, recs in small_corpus.items():
        n_ch, sfreq, n_cls = expected[name]
        spec = SYNTHETIC_DATASETS[name]
        assert len(recs) == SMALL["n_subjects"] * SMALL["n_sessions"]
        assert [(r.subject, r.session) for r in recs] == [("01", "1"), ("01", "2"), ("02", "1"),
                                                         ("02", "2")]
        for r in recs:
            assert r.dataset == name and r.sfreq == sfreq and r.data.shape[0] == n_ch
            assert r.ch_names == list(spec.ch_names) and r.data.dtype == np.float32
            assert r.label_names == dict(enumerate(spec.class_names)) and len(r.label_names) == n_cls
            r.check_finite()
            # EEG amplitudes: tens of microvolts, in volts
            assert 5e-6 < np.median(r.data.std(axis=1)) < 60e-6
            assert r.meta["seed"] == 3 and r.meta["signal_model"]["line_freq"] == 50.0
    assert ChannelVocabulary.union(*(s.ch_names for s in SYNTHETIC_DATASETS.values())) == \
        ChannelVocabulary(SEED_62)


def test_same_seed_identical_other_seed_different():
    kw = {"n_subjects": 1, "n_sessions": 1, "n_trials_per_class": 2}
    a = make_synthetic_recordings("syn_dreamer", seed=7, **kw)[0]
    b = make_synthetic_recordings("syn_dreamer", seed=7, **kw)[0]
    c = make_synthetic_recordings("syn_dreamer", seed=8, **kw)[0]
    np.testing.assert_array_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert a.data.shape == c.data.shape
    assert np.abs(a.data - c.data).mean() > 0.5 * np.abs(a.data).mean()
    # subjects of one seed differ from each other too
    s1, s2 = make_synthetic_recordings("syn_dreamer", n_subjects=2, n_sessions=1,
                                       n_trials_per_class=2, seed=7)
    assert s1.meta["subject_params"]["iaf"] != s2.meta["subject_params"]["iaf"]
    assert not np.allclose(s1.data, s2.data)


def test_labels_balanced_events_inside_and_shuffled(small_corpus):
    for recs in small_corpus.values():
        orders = []
        for r in recs:
            ev = r.events
            counts = ev["label"].value_counts().sort_index()
            assert counts.index.tolist() == list(range(len(r.label_names)))
            assert (counts == SMALL["n_trials_per_class"]).all()
            assert (ev["onset"] >= 0).all() and (ev["onset"] + ev["duration"] <= r.duration).all()
            assert np.allclose(ev["duration"], 4.0)
            # trials do not overlap: each starts after the previous one ended
            assert (ev["onset"].to_numpy()[1:] >= (ev["onset"] + ev["duration"]).to_numpy()[:-1]).all()
            assert ev["description"].tolist() == [r.label_names[k] for k in ev["label"]]
            orders.append(tuple(ev["label"]))
        assert len(set(orders)) > 1  # class order is shuffled per session


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="dataset"):
        make_synthetic_recordings("syn_tuh")


@pytest.fixture(scope="module")
def with_and_without_artifacts():
    kw = {"n_subjects": 1, "n_sessions": 1, "n_trials_per_class": 6, "seed": 1}
    on = make_synthetic_recordings("syn_seed", artifacts=True, **kw)[0]
    off = make_synthetic_recordings("syn_seed", artifacts=False, **kw)[0]
    return on, off


def test_blinks_are_super_gaussian_and_frontal(with_and_without_artifacts):
    on, off = with_and_without_artifacts
    ch = on.ch_names.index
    art = on.data.astype(np.float64) - off.data  # the artifact signals exactly
    assert on.meta["n_blinks"] > 5
    # blinks make the frontal channel heavy-tailed (normal: kurtosis 3)
    assert stats.kurtosis(on.data[ch("Fp1")], fisher=False) > 5
    assert stats.kurtosis(on.data[ch("Fp1")], fisher=False) > \
        2 * stats.kurtosis(off.data[ch("Fp1")], fisher=False)
    # blink energy (below 5 Hz) is frontal: Fp1/Fp2/AF3/AF4 >> occipital
    sos = signal.butter(4, 5.0, fs=on.sfreq, output="sos")
    slow = signal.sosfiltfilt(sos, art, axis=-1)
    energy = dict(zip(on.ch_names, (slow**2).mean(axis=1)))
    frontal = np.mean([energy[c] for c in ("Fp1", "Fp2", "AF3", "AF4")])
    occipital = np.mean([energy[c] for c in ("O1", "Oz", "O2")])
    assert frontal > 20 * occipital
    assert energy["Fp1"] > energy["AF3"] > energy["F3"] > energy["C3"]


def test_muscle_is_temporal_and_line_noise_at_50_hz(with_and_without_artifacts):
    on, off = with_and_without_artifacts
    art = on.data.astype(np.float64) - off.data
    sos = signal.butter(4, [20.0, 45.0], btype="bandpass", fs=on.sfreq, output="sos")
    hf = dict(zip(on.ch_names, (signal.sosfiltfilt(sos, art, axis=-1) ** 2).mean(axis=1)))
    assert min(hf["T7"], hf["T8"]) > 10 * max(hf["Cz"], hf["Pz"], hf["Fz"])
    assert on.meta["n_muscle_bursts"] > 0
    ratios = []
    for rec in (on, off):
        f, p = signal.welch(rec.data, fs=rec.sfreq, nperseg=int(2 * rec.sfreq))  # (C, F)
        d = np.abs(f - 50.0)
        ratios.append(p[:, np.argmin(d)] / np.median(p[:, (d > 3) & (d < 10)], axis=1))
    assert np.median(ratios[0]) > 10  # a line-noise peak at 50 Hz on most channels
    assert ratios[1].max() < 2  # and none without artifacts


def test_background_is_spatially_smooth_and_pink():
    rec = make_synthetic_recordings("syn_seed", n_subjects=1, n_sessions=1,
                                    n_trials_per_class=4, artifacts=False, seed=2)[0]
    x = rec.data.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    corr = np.corrcoef(x)
    pos = channel_positions(rec.ch_names)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    near = corr[(dist > 0) & (dist < 0.03)].mean()
    far = corr[dist > 0.12].mean()
    assert near > 0.5 and near > far + 0.3
    f, p = signal.welch(x, fs=rec.sfreq, nperseg=400)
    p = p.mean(0)
    assert p[(f >= 2) & (f < 4)].mean() > 5 * p[(f >= 30) & (f < 45)].mean()  # 1/f decay


def test_generation_time_budget():
    channel_positions(SEED_62)  # the montage is loaded once per process, not per corpus
    # CPU time, not wall time: the budget should not depend on what else the machine runs
    t0, w0 = time.process_time(), time.perf_counter()
    corpus = make_synthetic_corpus()  # smoke size: 3 datasets x 4 subjects x 2 sessions x 12/class
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    assert sum(len(v) for v in corpus.values()) == 24
    assert cpu < 5.0, f"generating the smoke corpus took {cpu:.1f} s of CPU ({wall:.1f} s wall)"


def test_class_effect_is_learnable_and_comes_from_the_class_pattern():
    recs = make_synthetic_recordings("syn_deap", seed=0)
    X, index = _windows(recs)
    res = within_subject(X, index, recs[0].sfreq)
    assert len(res) == 4 and res["accuracy"].mean() > 0.7
    # control: the same corpus without a class effect is at chance
    null = make_synthetic_recordings("syn_deap", seed=0, model=SignalModel(class_strength=0.0))
    Xn, index_n = _windows(null)
    res_n = within_subject(Xn, index_n, null[0].sfreq)
    assert res_n["accuracy"].mean() < 0.65


def test_waveform_shape_codes_the_class_where_band_power_cannot_see_it():
    # no band-power effect: only the harmonic phase of the mu-like rhythm follows the class
    model = SignalModel(class_strength=0.0)
    recs = make_synthetic_recordings("syn_deap", seed=0, n_subjects=2, trial_s=10.0, model=model)
    X, index = _windows(recs)
    fs = recs[0].sfreq
    de = within_subject(X, index, fs)
    assert de["accuracy"].mean() < 0.65
    # a higher-order statistic sees it: skewness of each channel around the rhythm (6-30 Hz)
    sos = signal.butter(4, [6.0, 30.0], "bandpass", fs=fs, output="sos")
    skew = stats.skew(signal.sosfiltfilt(sos, X, axis=-1), axis=-1)  # (N, C)
    res = within_subject(skew, index, fs, n_times=X.shape[-1])
    assert res["accuracy"].mean() > 0.8


def test_switching_the_shape_effect_off_removes_one_source_only():
    rec = make_synthetic_recordings("syn_dreamer", seed=3, n_subjects=1, n_sessions=1,
                                    n_trials_per_class=2)[0]
    off = make_synthetic_recordings("syn_dreamer", seed=3, n_subjects=1, n_sessions=1,
                                    n_trials_per_class=2, model=SignalModel(shape_uv=0.0))[0]
    sv = np.linalg.svd(rec.data - off.data, compute_uv=False)  # one dipole: a rank-1 difference
    assert sv[0] > 0 and sv[1] < 1e-3 * sv[0]
