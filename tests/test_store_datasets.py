import numpy as np
import pandas as pd
import pytest
import torch

from workbench.channels import DEAP_32, DREAMER_14, SEED_62, ChannelVocabulary
from workbench.data.datasets import (
    ConcatDataset,
    EpochBatchSampler,
    SingleChannelDataset,
    WindowDataset,
    make_loader,
)
from workbench.data.store import WindowStore, build_store
from workbench.data.windowing import make_windows, scale_windows

from .conftest import make_recording


def test_make_windows_within_events():
    rec = make_recording(n_trials=4, trial_s=4.0, sfreq=100.0)
    win, rows = make_windows(rec, window_s=2.0, overlap_s=1.0)
    assert win.shape == (4 * 3, 6, 200)
    assert rows["trial"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert rows["label"].tolist() == [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3
    s = int(rows["start"].iloc[1])
    np.testing.assert_array_equal(win[1], rec.data[:, s:s + 200])
    with pytest.raises(ValueError, match="overlap_s"):
        make_windows(rec, window_s=2.0, overlap_s=2.0)


def test_scalings():
    x = np.random.default_rng(0).standard_normal((2, 3, 100)).astype(np.float32)
    mm = scale_windows(x, "minmax")
    np.testing.assert_allclose(mm.min(-1), -1, atol=1e-6)
    np.testing.assert_allclose(mm.max(-1), 1, atol=1e-6)
    p = scale_windows(x, "percentile95")
    np.testing.assert_allclose(np.percentile(np.abs(p), 95, axis=-1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        scale_windows(x, "zscore")


def test_store_roundtrip(tmp_path, toy_recordings):
    store = build_store(toy_recordings, tmp_path / "s", window_s=2.0, overlap_s=1.0,
                        provenance={"recipe": "none"})
    again = WindowStore(tmp_path / "s")
    assert len(again) == len(store) == 3 * 10 * 3
    assert again.meta["provenance"] == {"recipe": "none"}
    assert again.index["subject"].tolist()[:1] == ["0"]
    w, rows = make_windows(toy_recordings[1], window_s=2.0, overlap_s=1.0)
    ids = again.subset_index(subject="1")
    np.testing.assert_array_equal(again.get(ids[::-1]), w[::-1])
    with pytest.raises(FileExistsError):
        build_store(toy_recordings, tmp_path / "s", window_s=2.0)


def test_store_write_failure_leaves_nothing(tmp_path, toy_recordings):
    bad = toy_recordings[1].replace(sfreq=256.0)
    with pytest.raises(ValueError, match="toy/1/0/0.*sampling rate"):
        build_store([toy_recordings[0], bad], tmp_path / "s", window_s=2.0)
    assert list(tmp_path.iterdir()) == []


def test_store_detects_truncated_file(tmp_path, toy_recordings):
    build_store(toy_recordings, tmp_path / "s", window_s=2.0)
    f = tmp_path / "s" / "windows.f32"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(ValueError, match="windows.f32.*corrupt"):
        WindowStore(tmp_path / "s")


def _store(tmp_path, name, names, sfreq, n_subjects=2):
    recs = [make_recording(str(s), ch_names=names, sfreq=sfreq, seed=s, dataset=name)
            for s in range(n_subjects)]
    return build_store(recs, tmp_path / name, window_s=2.0, overlap_s=1.0)


def test_window_dataset_batches_match_store(tmp_path):
    store = _store(tmp_path, "deap", DEAP_32, 128.0)
    ucs = ChannelVocabulary.union(SEED_62, DEAP_32, DREAMER_14)
    ds = WindowDataset(store, indices=np.arange(10, 40), vocab=ucs)
    batch = next(iter(make_loader(ds, 8, shuffle=True, seed=1)))
    x = batch["x"].numpy()
    np.testing.assert_array_equal(x, store.windows[batch["index"].numpy()])
    b = len(x)
    assert batch["ch_ids"].shape == (b, 32)
    assert batch["ch_ids"][0].tolist() == ucs.ids(DEAP_32).tolist()
    assert batch["rate_id"].tolist() == [0] * b
    np.testing.assert_array_equal(batch["y"].numpy(), store.labels[batch["index"].numpy()])
    one = ds[3]
    assert one["x"].shape == (32, 256) and int(one["index"]) == 13


def test_single_channel_view(tmp_path):
    store = _store(tmp_path, "dreamer", DREAMER_14, 128.0)
    ds = SingleChannelDataset(store)
    assert len(ds) == len(store) * 14
    b = ds.__getitems__([0, 15, 29])
    np.testing.assert_array_equal(b["x"][1, 0].numpy(), store.windows[1, 1])
    np.testing.assert_array_equal(b["x"][2, 0].numpy(), store.windows[2, 1])
    assert b["ch_ids"][:, 0].tolist() == [0, 1, 1]


def test_mixed_montage_batches_pad_channels(tmp_path):
    ucs = ChannelVocabulary.union(SEED_62, DEAP_32, DREAMER_14)
    deap = _store(tmp_path, "deap", DEAP_32, 128.0)
    dreamer = _store(tmp_path, "dreamer", DREAMER_14, 128.0)
    seed = _store(tmp_path, "seed", SEED_62[:20], 200.0)
    ds = ConcatDataset([WindowDataset(deap, vocab=ucs), WindowDataset(dreamer, vocab=ucs),
                        WindowDataset(seed, vocab=ucs)])
    seen_mixed = False
    n = 0
    for batch in make_loader(ds, 16, seed=0):
        n += len(batch["x"])
        t = batch["x"].shape[-1]
        assert t in (256, 400)
        src = batch["source"]
        if (src == 0).any() and (src == 1).any():
            seen_mixed = True
            m = batch["ch_mask"][src == 1]
            assert m.sum(1).tolist() == [14] * int((src == 1).sum())
            assert (batch["x"][src == 1][:, 14:] == 0).all()
        rates = batch["rate_id"].unique().tolist()
        assert rates in ([0], [1])
    assert n == len(ds) and seen_mixed


def test_epoch_sampler_deterministic_per_epoch():
    s = EpochBatchSampler(50, 8, seed=3)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    s.set_epoch(0)
    assert list(s) == a and a != b
    assert sorted(i for batch in a for i in batch) == list(range(50))
    r0 = EpochBatchSampler(50, 8, seed=3, rank=0, world_size=2)
    r1 = EpochBatchSampler(50, 8, seed=3, rank=1, world_size=2)
    got = sorted(i for s_ in (r0, r1) for batch in s_ for i in batch)
    assert got == list(range(50))


def test_dataset_rejects_bad_indices_and_channels(tmp_path):
    store = _store(tmp_path, "deap", DEAP_32, 128.0)
    with pytest.raises(IndexError):
        WindowDataset(store, indices=[len(store)])
    with pytest.raises(ValueError, match="CB1"):
        WindowDataset(store, channels=["Fp1", "CB1"])
    sub = WindowDataset(store, channels=list(DREAMER_14))
    assert sub.__getitems__([0])["x"].shape == (1, 14, 256)
    assert isinstance(pd.DataFrame(store.index), pd.DataFrame)
    assert torch.is_tensor(sub[0]["x"])


def test_make_windows_refuses_nan_naming_recording_and_channel():
    rec = make_recording(n_trials=2)
    data = rec.data.copy()
    data[rec.ch_names.index("Cz"), 50] = np.nan
    with pytest.raises(ValueError, match=r"toy/1/0/0: NaN or inf samples in channels \['Cz'\]"):
        make_windows(rec.replace(data=data), window_s=2.0)


def test_events_past_the_end_are_warned(caplog):
    from workbench.data.recording import make_events

    rec = make_recording(n_trials=2, trial_s=4.0, gap_s=1.0, sfreq=100.0)  # 11 s
    late = rec.replace(events=make_events([1.0, 9.0, 20.0], 4.0, [0, 1, 1]))
    win, rows = make_windows(late, window_s=2.0)
    assert rows["trial"].tolist() == [0, 0, 1]  # 9-11 s clipped to one window, 20 s none
    assert "2 labelled events end after the recording" in caplog.text


def test_build_store_reorders_channels_and_resamples(tmp_path, toy_recordings):
    a, b = toy_recordings[:2]
    rev = b.replace(data=b.data[::-1], ch_names=b.ch_names[::-1], ch_types=None)
    store = build_store([a, rev], tmp_path / "s", window_s=2.0)
    ref = build_store([a, b], tmp_path / "ref", window_s=2.0)
    assert store.ch_names == a.ch_names
    np.testing.assert_array_equal(np.asarray(store.windows), np.asarray(ref.windows))
    other = b.replace(ch_names=["Fp1", "Fz", "Cz", "Pz", "O1", "T7"])
    with pytest.raises(ValueError, match=r"toy/1/0/0: channels differ.*missing \['O2'\]"):
        build_store([a, other], tmp_path / "x", window_s=2.0)
    # 128 Hz recordings into a 200 Hz store: same windows in seconds, same power
    up = build_store([a, b.resample(256.0)], tmp_path / "up", window_s=2.0, sfreq=200.0)
    assert up.sfreq == 200.0 and up.n_times == 400 and len(up) == len(ref)
    np.testing.assert_allclose(up.index["start_s"], ref.index["start_s"], atol=1 / 128)
    np.testing.assert_allclose(np.asarray(up.windows).var(), np.asarray(ref.windows).var(),
                               rtol=0.05)
