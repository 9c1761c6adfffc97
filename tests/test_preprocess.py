"""The MNE preprocessing pipeline on synthetic recordings: what each step computes, the batch
runner's failure handling, caching, resumption and provenance, and ICA + ICLabel on blinks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import welch
from threadpoolctl import threadpool_limits

from workbench.config import from_dict, to_dict
from workbench.data.preprocess import (
    RECIPES,
    PreprocessConfig,
    detect_bad_channels,
    get_recipe,
    preprocess_recording,
    run_pipeline,
)
from workbench.data.recording import Recording
from workbench.data.store import WindowStore
from workbench.data.synthetic import make_synthetic_recordings

CH8 = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2"]
FAST = dict(ica=False, detect_bads=True)


def _bench_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_preprocess.py"
    spec = importlib.util.spec_from_file_location("bench_preprocess", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _noise_recording(sfreq=250.0, seconds=20.0, seed=0, line_uv=20.0, common_uv=0.0):
    """White noise (10 uV) on 8 channels + 50 Hz line noise + a common-mode 7 Hz signal."""
    rng = np.random.default_rng(seed)
    n = int(sfreq * seconds)
    t = np.arange(n) / sfreq
    x = 10e-6 * rng.standard_normal((len(CH8), n))
    x += line_uv * 1e-6 * np.sin(2 * np.pi * 50 * t + rng.uniform(0, 6, (len(CH8), 1)))
    x += common_uv * 1e-6 * np.sin(2 * np.pi * 7 * t)
    return Recording(x, sfreq, CH8, "toy", "1")


def _band_power(x, sfreq, lo, hi):
    f, p = welch(x, fs=sfreq, nperseg=int(4 * sfreq), axis=-1)
    return p[..., (f >= lo) & (f <= hi)].mean()


@pytest.fixture(scope="module")
def dreamer():
    """Three short artifact-free syn_dreamer recordings (14 ch, 128 Hz, 4 trials of 4 s)."""
    return make_synthetic_recordings("syn_dreamer", n_subjects=3, n_sessions=1,
                                     n_trials_per_class=2, seed=1, artifacts=False)


# ----------------------------------------------------------------------------- config
def test_config_errors_name_the_field():
    with pytest.raises(TypeError, match="PreprocessConfig.l_freq"):
        from_dict(PreprocessConfig, {"l_freq": "one"})
    with pytest.raises(ValueError, match="bogus"):
        get_recipe("omfa", bogus=1)
    with pytest.raises(ValueError, match="l_freq"):
        get_recipe("omfa", l_freq=60.0)
    with pytest.raises(ValueError, match="keep_classes"):
        get_recipe("omfa", keep_classes=["brian"])
    with pytest.raises(ValueError, match="ica_method"):
        get_recipe("omfa", ica_method="fastica")
    with pytest.raises(ValueError, match="recipe"):
        get_recipe("labram")
    with pytest.raises(ValueError, match="montage"):
        get_recipe("omfa", montage=None)


def test_recipes_match_the_papers():
    for name in RECIPES:
        assert get_recipe(name).name == name
    omfa = get_recipe("omfa")
    assert (omfa.reference, omfa.l_freq, omfa.h_freq, omfa.ica, omfa.keep_classes) == (
        "average", 1.0, 49.0, True, ["brain"])
    assert (omfa.window_s, omfa.overlap_s, omfa.resample) == (2.0, 0.2, None)
    stelar, trace, eegm2 = get_recipe("stelar"), get_recipe("trace"), get_recipe("eegm2")
    assert (stelar.resample, stelar.l_freq, stelar.h_freq, stelar.scale) == (
        200.0, 0.3, 75.0, "minmax")
    assert (trace.resample, trace.l_freq, trace.h_freq) == (200.0, 0.1, 75.0)
    assert stelar.notch and trace.notch
    assert (eegm2.resample, eegm2.scale) == (128.0, "percentile95")
    assert get_recipe("eegm2", bipolar="banana16").bipolar == "banana16"


# ----------------------------------------------------------------------------- signal steps
def test_notch_removes_line_noise_and_band_pass_limits():
    rec = _noise_recording()
    cfg = get_recipe("minimal", l_freq=1.0, h_freq=None, notch=[50.0], reference="none",
                     detect_bads=False)
    clean, _ = preprocess_recording(rec, cfg)
    line_in, line_out = (_band_power(x, 250, 49.5, 50.5) for x in (rec.data, clean.data))
    mid_in, mid_out = (_band_power(x, 250, 20, 40) for x in (rec.data, clean.data))
    assert line_out < line_in / 100          # the 50 Hz line is gone
    assert abs(mid_out / mid_in - 1) < 0.1   # the rest of the spectrum is untouched

    # MNE's default transition bands: 4 Hz high-pass stops below 2 Hz, 30 Hz low-pass above 37.5
    band, _ = preprocess_recording(rec, get_recipe("minimal", l_freq=4.0, h_freq=30.0,
                                                   reference="none", detect_bads=False))
    assert _band_power(band.data, 250, 45, 120) < _band_power(rec.data, 250, 45, 120) / 300
    assert _band_power(band.data, 250, 0.5, 1.5) < _band_power(rec.data, 250, 0.5, 1.5) / 100
    assert abs(_band_power(band.data, 250, 8, 20) / _band_power(rec.data, 250, 8, 20) - 1) < 0.1


def test_average_reference_zero_channel_mean():
    rec = _noise_recording(common_uv=50.0)
    avg, _ = preprocess_recording(rec, get_recipe("minimal", detect_bads=False))
    none, _ = preprocess_recording(rec, get_recipe("minimal", reference="none",
                                                   detect_bads=False))
    scale = avg.data.std()
    assert np.abs(avg.data.mean(axis=0)).max() < 1e-5 * scale
    assert np.abs(none.data.mean(axis=0)).max() > 0.5 * scale  # the common 7 Hz signal


def test_detect_bad_channels_hand_made():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 1000)) * 1e-5
    x[2] = 0.0
    x[7] *= 100
    flat, noisy = detect_bad_channels(x, [f"c{i}" for i in range(10)])
    assert flat == ["c2"] and noisy == ["c7"]
    assert detect_bad_channels(rng.standard_normal((10, 1000)) * 1e-5,
                               [f"c{i}" for i in range(10)]) == ([], [])


def test_flat_channel_interpolated(dreamer):
    rec = dreamer[0]
    i = rec.ch_names.index("F3")
    data = rec.data.copy()
    data[i] = 0.0
    flat_rec = rec.replace(data=data)
    cfg = get_recipe("minimal")
    ref, rep0 = preprocess_recording(rec, cfg)
    out, rep = preprocess_recording(flat_rec, cfg)
    assert rep0.bad_channels == []
    assert rep.flat_channels == ["F3"] and rep.bad_action == "interpolated"
    assert out.ch_names == rec.ch_names
    # the interpolated F3 follows the true F3 (spatially smooth synthetic field)
    assert np.corrcoef(out.data[i], ref.data[i])[0, 1] > 0.7

    noisy = rec.data.copy()
    noisy[rec.ch_names.index("O1")] *= 30
    _, rep = preprocess_recording(rec.replace(data=noisy), cfg)
    assert rep.noisy_channels == ["O1"]

    many = rec.data.copy()
    many[:6] = 0.0
    with pytest.raises(ValueError, match=r"6 of 14 EEG channels are bad.*AF3"):
        preprocess_recording(rec.replace(data=many), cfg)


def test_resample_bipolar_and_non_eeg_channels(dreamer):
    rec = dreamer[0]
    eog = np.r_[rec.data, rec.data[:1] * 3]
    rec2 = rec.replace(data=eog, ch_names=rec.ch_names + ["VEOG"],
                       ch_types=list(rec.ch_types) + ["eog"])
    out, rep = preprocess_recording(rec2, get_recipe("minimal", resample=100.0))
    assert out.sfreq == 100.0 and out.ch_names == rec.ch_names
    assert abs(out.n_times - rec.n_times * 100 / 128) <= 1
    assert rep.non_eeg_channels == ["VEOG"]
    pd.testing.assert_frame_equal(out.events, rec.events)
    seed = make_synthetic_recordings("syn_seed", n_subjects=1, n_sessions=1,
                                     n_trials_per_class=1, seed=0, artifacts=False)[0]
    bip, _ = preprocess_recording(seed, get_recipe("eegm2", bipolar="banana16"))
    assert len(bip.ch_names) == 16 and bip.ch_names[0] == "Fp1-F7" and bip.sfreq == 128.0


def test_matches_plain_mne_reference(dreamer):
    """The pipeline equals the plain MNE script (the benchmark's reference twin)."""
    bench = _bench_module()
    cfg = get_recipe("minimal", notch=[50.0], resample=100.0)
    ours, _ = preprocess_recording(dreamer[1], cfg)
    raw, _ = bench.plain_mne_preprocess(dreamer[1], cfg)
    ref = raw.get_data()
    np.testing.assert_allclose(ours.data, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


# ----------------------------------------------------------------------------- the batch runner
def test_nan_recording_fails_batch_continues(dreamer, tmp_path):
    bad = dreamer[1].data.copy()
    bad[dreamer[1].ch_names.index("T8"), 100:110] = np.nan
    recs = [dreamer[0], dreamer[1].replace(data=bad), dreamer[2]]
    with pytest.raises(ValueError, match=r"NaN or inf samples in channels \['T8'\]"):
        preprocess_recording(recs[1], "minimal")
    res = run_pipeline(recs, cfg="minimal", out_dir=tmp_path)
    assert res.failures["key"].tolist() == [recs[1].key]
    assert "T8" in res.failures["error"].iloc[0]
    assert sorted(res.store.index["subject"].unique()) == ["01", "03"]
    assert res.reports["key"].tolist() == [recs[0].key, recs[2].key]
    assert (tmp_path / "failures.csv").exists()


def test_cache_second_run_and_provenance(dreamer, tmp_path):
    cfg = get_recipe("minimal", scale="microvolts")
    first = run_pipeline(dreamer, cfg=cfg, out_dir=tmp_path)
    assert not first.reports["from_cache"].any()
    second = run_pipeline(dreamer, cfg=cfg, out_dir=tmp_path)
    assert second.reports["from_cache"].all()
    np.testing.assert_array_equal(np.asarray(first.store.windows), np.asarray(second.store.windows))
    pd.testing.assert_frame_equal(first.store.index, second.store.index)
    # the store's provenance holds the config and one report per recording
    prov = WindowStore(tmp_path / "store").meta["provenance"]
    assert prov["config"] == to_dict(cfg) and prov["recipe"] == "minimal"
    assert [r["key"] for r in prov["reports"]] == [r.key for r in dreamer]
    assert json.loads((tmp_path / "config.json").read_text()) == to_dict(cfg)
    # windows in volts * 1e6 of the cleaned recording
    clean = second.cleaned(dreamer[0].key)
    row = second.store.index.iloc[0]
    s = int(row["start"])
    np.testing.assert_allclose(second.store.windows[0], clean.data[:, s:s + 256] * 1e6,
                               rtol=1e-5)
    # window settings do not invalidate the cache; signal settings do
    third = run_pipeline(dreamer, cfg=get_recipe("minimal", window_s=1.0), out_dir=tmp_path)
    assert third.reports["from_cache"].all()
    assert len(third.store) > len(second.store)
    fourth = run_pipeline(dreamer[:1], cfg=get_recipe("minimal", h_freq=30.0), out_dir=tmp_path)
    assert not fourth.reports["from_cache"].any()


def test_interrupted_run_resumes(dreamer, tmp_path):
    def killed_after(k):
        for i, rec in enumerate(dreamer):
            if i == k:
                raise KeyboardInterrupt("killed")
            yield rec

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(killed_after(2), cfg="minimal", out_dir=tmp_path)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert not (tmp_path / "store").exists()  # the partial store was discarded
    # the tables say what was done before the interruption
    assert len(pd.read_csv(tmp_path / "reports.csv")) == 2
    assert (tmp_path / "failures.csv").exists()
    res = run_pipeline(dreamer, cfg="minimal", out_dir=tmp_path)
    assert res.reports["from_cache"].tolist() == [True, True, False]
    assert len(res.store.index["subject"].unique()) == 3


def test_mixed_rates_never_abort_the_batch(dreamer, tmp_path):
    seed = make_synthetic_recordings("syn_seed", n_subjects=1, n_sessions=1,
                                     n_trials_per_class=1, seed=0, artifacts=False)[0]
    fast = dreamer[1].resample(256.0)  # same layout, another rate
    recs = [dreamer[0], fast, seed, dreamer[2]]
    # native rates: the recordings at another rate are reported failures, the rest a store
    res = run_pipeline(recs, cfg="minimal", out_dir=tmp_path / "native")
    assert res.store.sfreq == 128.0
    assert sorted(res.store.index["subject"].unique()) == ["01", "03"]
    errors = res.failures.set_index("key")["error"]
    assert list(errors.index) == [fast.key, seed.key]
    assert "sampling rate 256 Hz differs from the store's 128 Hz" in errors[fast.key]
    assert "--resample" in errors[fast.key]
    assert len(pd.read_csv(tmp_path / "native" / "failures.csv")) == 2
    assert len(pd.read_csv(tmp_path / "native" / "reports.csv")) == 2
    # with resample, the 256 Hz recording joins; the 62-channel layout still cannot
    res = run_pipeline(recs, cfg=get_recipe("minimal", resample=128.0),
                       out_dir=tmp_path / "resampled")
    assert res.store.sfreq == 128.0
    assert sorted(res.store.index["subject"].unique()) == ["01", "02", "03"]
    assert res.failures["key"].tolist() == [seed.key]
    assert "not in the store" in res.failures["error"].iloc[0]


def test_rates_within_tolerance_are_one_rate(tmp_path):
    a = _noise_recording(sfreq=250.0, seed=0)
    b = _noise_recording(sfreq=250.003, seed=1).replace(subject="2")  # estimated from a clock
    res = run_pipeline([a, b], cfg=get_recipe("minimal", detect_bads=False), out_dir=tmp_path)
    assert res.failures.empty
    assert sorted(res.store.index["subject"].unique()) == ["1", "2"]
    assert res.store.sfreq == 250.0 and res.store.n_times == 500


def test_reordered_channels_join_and_channel_policies(dreamer, tmp_path):
    cfg = get_recipe("minimal", detect_bads=False)
    alone = run_pipeline(dreamer[1:2], cfg=cfg, out_dir=tmp_path / "alone").store
    rev = dreamer[1].replace(data=dreamer[1].data[::-1], ch_names=dreamer[1].ch_names[::-1],
                             ch_types=None)
    res = run_pipeline([dreamer[0], rev], cfg=cfg, out_dir=tmp_path / "reordered")
    assert res.failures.empty and res.store.ch_names == dreamer[0].ch_names
    assert "channels reordered" in res.reports["notes"].iloc[1]
    ids = res.store.subset_index(subject="02")
    np.testing.assert_allclose(res.store.get(ids), np.asarray(alone.windows), rtol=1e-5,
                               atol=1e-4)

    keep = [i for i, n in enumerate(dreamer[1].ch_names) if n != "F3"]
    short = dreamer[1].replace(data=dreamer[1].data[keep],
                               ch_names=[dreamer[1].ch_names[i] for i in keep], ch_types=None)
    recs = [dreamer[0], short, dreamer[2]]
    res = run_pipeline(recs, cfg=cfg, out_dir=tmp_path / "reorder")
    assert res.failures["key"].tolist() == [short.key]
    assert "missing ['F3']" in res.failures["error"].iloc[0]
    inter = run_pipeline(recs, cfg=get_recipe("minimal", detect_bads=False,
                                              channel_policy="intersection"),
                         out_dir=tmp_path / "inter")
    assert inter.failures.empty and len(inter.store.ch_names) == 13
    assert "F3" not in inter.store.ch_names and inter.store.index["subject"].nunique() == 3
    interp = run_pipeline(recs, cfg=get_recipe("minimal", detect_bads=False,
                                               channel_policy="interpolate"),
                          out_dir=tmp_path / "interp")
    assert interp.failures.empty and interp.store.ch_names == dreamer[0].ch_names
    f3 = dreamer[0].ch_names.index("F3")
    filled = interp.store.get(interp.store.subset_index(subject="02"))[:, f3].ravel()
    true = np.asarray(alone.windows)[:, f3].ravel()
    assert np.corrcoef(filled, true)[0, 1] > 0.7  # the interpolated F3 follows the true F3


def test_truncated_cache_entry_is_recomputed(dreamer, tmp_path, caplog):
    first = run_pipeline(dreamer, cfg="minimal", out_dir=tmp_path)
    npz = sorted((tmp_path / "cache").glob("*.npz"))[1]
    npz.write_bytes(npz.read_bytes()[:1000])  # the .json is intact
    second = run_pipeline(dreamer, cfg="minimal", out_dir=tmp_path)
    assert second.reports["from_cache"].sum() == 2 and second.failures.empty
    assert "unreadable (BadZipFile" in caplog.text
    np.testing.assert_array_equal(np.asarray(first.store.windows),
                                  np.asarray(second.store.windows))


def test_stale_temporaries_of_killed_runs_are_removed(dreamer, tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = __import__("socket").gethostname()
    for name, pid in ((".store.killed01", int(dead)), (".store.running1", os.getppid()),
                      (".other.killed01", int(dead))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "windows.f32").write_bytes(b"\0" * 4096)
        (tmp_path / name / ".owner.json").write_text(json.dumps({"pid": pid, "host": host}))
    cache = tmp_path / "cache"
    cache.mkdir()
    old, new = cache / ".0123456789abcdef.npz.abcd1234.tmp", cache / ".fedcba9876543210.npz.x1y2z3w4.tmp"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (1e9, 1e9))
    run_pipeline(dreamer[:1], cfg="minimal", out_dir=tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [".other.killed01", ".store.running1"]  # only ours, only the dead one
    assert not old.exists() and new.exists()


@pytest.mark.slow
def test_parallel_equals_sequential(dreamer, tmp_path):
    seq = run_pipeline(dreamer, cfg="minimal", out_dir=tmp_path / "a", cache=False)
    par = run_pipeline(dreamer, cfg="minimal", out_dir=tmp_path / "b", n_jobs=2, cache=False)
    np.testing.assert_array_equal(np.asarray(seq.store.windows), np.asarray(par.store.windows))
    pd.testing.assert_frame_equal(seq.store.index, par.store.index)


def test_fif_epochs_and_reject(dreamer, tmp_path):
    import mne

    cfg = get_recipe("minimal", reject_ptp=1.0)
    res = run_pipeline(dreamer[:1], cfg=cfg, out_dir=tmp_path, save_fif=True)
    files = list((tmp_path / "epochs").glob("*-epo.fif"))
    assert len(files) == 1
    ep = mne.read_epochs(files[0], verbose="error")
    np.testing.assert_allclose(ep.get_data() * 1e6, np.asarray(res.store.windows), rtol=1e-5)
    res = run_pipeline(dreamer[:1], cfg=get_recipe("minimal", reject_ptp=20e-6),
                       out_dir=tmp_path)
    n_all = len(ep)
    assert res.reports["n_rejected_windows"].iloc[0] > 0
    assert res.reports["n_windows"].iloc[0] + res.reports["n_rejected_windows"].iloc[0] == n_all


# ----------------------------------------------------------------------------- ICA + ICLabel
@pytest.mark.slow
def test_ica_iclabel_removes_blinks():
    kw = dict(n_subjects=1, n_sessions=1, n_trials_per_class=5, seed=3)
    art = make_synthetic_recordings("syn_deap", artifacts=True, **kw)[0]
    truth = make_synthetic_recordings("syn_deap", artifacts=False, **kw)[0]
    assert art.meta["n_blinks"] > 5
    clean, rep = preprocess_recording(art, "omfa")
    assert "eye blink" in rep.excluded_labels
    table = pd.DataFrame(rep.ica_labels)
    assert table.loc[table["excluded"], "label"].ne("brain").all()
    np.testing.assert_allclose(table[["brain", "muscle artifact", "eye blink", "heart beat",
                                      "line noise", "channel noise", "other"]].sum(axis=1), 1,
                               atol=1e-4)
    # at Fp1 the blinks are gone: the cleaned signal is much closer to the artifact-free one
    ref, _ = preprocess_recording(truth, get_recipe("omfa", ica=False))
    noica, _ = preprocess_recording(art, get_recipe("omfa", ica=False))
    i = art.ch_names.index("Fp1")
    err_ica = np.abs(clean.data[i] - ref.data[i]).max()
    err_raw = np.abs(noica.data[i] - ref.data[i]).max()
    assert err_ica < err_raw / 3

    # the plain MNE script (reference twin) with picard finds and removes the same components
    # (with one BLAS thread as the pipeline: the Gaussian part of a mixture has no unique ICA
    # rotation, so rounding differences from threading can change those components)
    with threadpool_limits(1):
        raw, plain_excluded = _bench_module().plain_mne_preprocess(art, get_recipe("omfa"),
                                                                   method="picard")
    assert plain_excluded == rep.excluded_labels
    np.testing.assert_allclose(clean.data, raw.get_data(), atol=1e-3 * np.abs(clean.data).max())

    keep_all, rep_all = preprocess_recording(art, get_recipe("omfa", keep_classes=list(
        ("brain", "muscle artifact", "eye blink", "heart beat", "line noise", "channel noise",
         "other"))))
    assert rep_all.excluded == []
    np.testing.assert_allclose(keep_all.data, noica.data, atol=1e-3 * np.abs(noica.data).max())


def test_viz_tables_and_figures(dreamer, tmp_path):
    from workbench.data import preprocess_viz as pv

    t = pd.DataFrame({"stage": ["raw"] * 3 + ["cleaned"] * 3, "freq": [49.0, 50.0, 51.0] * 2,
                      "psd": [10.0] * 3 + [1.0] * 3})
    assert pv.band_reduction_db(t, 49, 51) == pytest.approx(10.0)
    res = run_pipeline(dreamer[:1], cfg="minimal", out_dir=tmp_path)
    key = dreamer[0].key
    assert pv.original_recording(res, key, dreamer) is dreamer[0]
    spec = pv.spectra_table(dreamer[0], res.cleaned(key))
    assert pv.band_reduction_db(spec, 55, 64) > 20  # the 45 Hz low-pass
    assert abs(pv.band_reduction_db(spec, 8, 12)) < 3
    assert pv.excluded_table(res).empty and pv.report_table(res)["key"].tolist() == [key]
    table = pd.DataFrame({"component": [0, 1, 2], "label": ["brain", "eye blink", "other"],
                          "probability": [0.9, 0.8, 0.5], "excluded": [False, True, True]})
    maps = np.random.default_rng(0).standard_normal((14, 3))
    fig = pv.plot_components(maps, dreamer[0].ch_names, table)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["IC0: brain 0.90 (kept)", "IC1: eye blink 0.80 (excluded)",
                      "IC2: other 0.50 (excluded)"]
