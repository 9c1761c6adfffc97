"""EEGNet and ShallowConvNet (braindecode) as downstream methods: the model contract (raw
logits, embedding = what the classification layer reads), lengths in seconds converted to the
store's rate, one batch overfitted, and the generic fine-tuning driver beating chance on a
separable store. Skipped without the ``bench`` extra."""

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("braindecode")

from workbench import experiments  # noqa: E402
from workbench.config import get_profile  # noqa: E402
from workbench.data.store import WindowStore  # noqa: E402
from workbench.evaluation.protocols import Protocol  # noqa: E402
from workbench.experiments.finetune import METRICS  # noqa: E402
from workbench.methods import list_methods  # noqa: E402
from workbench.methods.classic import CLASSIC_BASELINES, get_classic  # noqa: E402
from workbench.models.classic import ClassicNet  # noqa: E402

ARCHS = ("eegnet", "shallow_convnet")


def _net(arch, sfreq, n_times, n_chans=4, n_classes=3, seed=0, **kw):
    torch.manual_seed(seed)
    return ClassicNet(arch, n_chans=n_chans, n_times=n_times, n_classes=n_classes, sfreq=sfreq,
                      **kw)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sfreq,n_times", [(100.0, 200), (200.0, 400), (100.0, 40)])
def test_outputs_are_raw_logits_of_the_embedding(arch, sfreq, n_times):
    net = _net(arch, sfreq, n_times).eval()
    x = torch.randn(5, 4, n_times) * 20  # microvolts
    with torch.no_grad():
        out = net(x, ch_ids=torch.zeros(5, 4, dtype=torch.long))
    logits, emb = out["logits"], out["embedding"]
    assert logits.shape == (5, 3) and emb.ndim == 2 and emb.shape[0] == 5
    # no LogSoftmax left: log-probabilities would have logsumexp 0 and be their own log-softmax
    assert not any(isinstance(m, torch.nn.LogSoftmax) for m in net.modules())
    assert torch.logsumexp(logits, 1).abs().min() > 1e-3
    assert (torch.log_softmax(logits, 1) - logits).abs().max() > 1e-3
    # the classification layer is linear in the embedding (the conv spans the feature map)
    w = net.classifier.weight.flatten(1)  # (K, F)
    torch.testing.assert_close(logits, emb @ w.T + net.classifier.bias, rtol=1e-4, atol=1e-4)


def test_lengths_in_seconds_follow_the_rate():
    # EEGNet: 64 samples at 128 Hz = 0.5 s -> 128 samples at 256 Hz, 50 at 100 Hz
    assert _net("eegnet", 128.0, 256).lengths == {"kernel_length": 64}
    assert _net("eegnet", 256.0, 512).lengths == {"kernel_length": 128}
    net = _net("eegnet", 100.0, 200)
    assert net.net.conv_temporal.kernel_size == (1, 50)
    # ShallowConvNet: 25 / 75 / 15 samples at 250 Hz (the paper's), 10 / 30 / 6 at 100 Hz
    assert _net("shallow_convnet", 250.0, 1000).lengths == {
        "filter_time_length": 25, "pool_time_length": 75, "pool_time_stride": 15}
    net = _net("shallow_convnet", 100.0, 200)
    assert net.lengths == {"filter_time_length": 10, "pool_time_length": 30,
                           "pool_time_stride": 6}
    assert net.net.conv_time_spat.conv_time.kernel_size == (10, 1)
    assert net.net.pool.kernel_size == (30, 1) and net.net.pool.stride == (6, 1)
    # pooled steps: (200 - 10 + 1 - 30) // 6 + 1 = 27, times 40 spatial filters
    assert net(torch.randn(2, 4, 200))["embedding"].shape == (2, 40 * 27)


def test_short_windows_clip_lengths_and_too_short_ones_are_refused():
    assert _net("eegnet", 100.0, 40).lengths == {"kernel_length": 40}  # 50 -> the window
    net = _net("shallow_convnet", 100.0, 20)  # pool 30 > 20 - 10 + 1 = 11 samples left
    assert net.lengths == {"filter_time_length": 10, "pool_time_length": 11,
                           "pool_time_stride": 6}
    assert net(torch.randn(2, 4, 20))["embedding"].shape == (2, 40)  # one pooled step
    with pytest.raises(ValueError, match="n_times"):
        _net("eegnet", 100.0, 20)
    with pytest.raises(ValueError, match="arch"):
        _net("deep4", 100.0, 200)
    with pytest.raises(ValueError, match=r"expected \(B, 4, 200\)"):
        _net("eegnet", 100.0, 200)(torch.randn(2, 4, 100))


@pytest.mark.parametrize("arch", ARCHS)
def test_overfits_one_batch(arch):
    torch.manual_seed(0)
    net = _net(arch, 100.0, 100, n_classes=2, drop_prob=0.0)
    x, y = torch.randn(16, 4, 100) * 20, torch.arange(16) % 2
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(net(x)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_methods_are_not_registered_and_are_found_by_name():
    assert not set(ARCHS) & set(list_methods())
    assert set(CLASSIC_BASELINES) == set(ARCHS)
    with pytest.raises(ValueError, match="shallow_convnet"):
        get_classic("deep4")
    for name in ARCHS:
        m = get_classic(name)
        assert m.name == name and list(m.variants) == ["scratch"]
        assert not m.variants["scratch"].pretrained and m.default_mode == "full"
        assert m.selection_metric(4) == "balanced_accuracy"
        prof = get_profile("smoke", finetune_epochs=2)
        cfg = m.finetune_config(prof, None)
        assert cfg.epochs == m.min_epochs and cfg.batch_size == prof.finetune_batch_size
        assert cfg.keep_top_k == 3 and cfg.weight_decay == 0.0


def _separable_store(root, sfreq=128.0, n_times=128, n_subjects=4, per_subject=40, seed=0):
    """Two classes told apart by a 10 Hz rhythm over the first two channels (class 1 only),
    in noise of the same power for both; subjects differ in rhythm phase and noise."""
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    y = np.tile(np.arange(per_subject) % 2, n_subjects)
    t = np.arange(n_times) / sfreq
    x = rng.standard_normal((n, 6, n_times)) * 10.0
    phase = rng.uniform(0, 2 * np.pi, n)
    x[:, :2] += (y * 12.0)[:, None, None] * np.sin(2 * np.pi * 10 * t + phase[:, None])[:, None]
    index = pd.DataFrame({"dataset": "toy", "subject": np.repeat(np.arange(n_subjects), per_subject)
                          .astype(str), "session": "1", "recording": "r", "trial": np.arange(n),
                          "label": y, "start": 0, "start_s": 0.0})
    return WindowStore.from_arrays(root, x.astype(np.float32), index,
                                   ["C3", "C4", "Fz", "Cz", "Pz", "Oz"], sfreq, dataset="toy",
                                   label_names={0: "rest", 1: "alpha"})


@pytest.mark.parametrize("arch", ARCHS)
def test_finetune_driver_trains_on_fixed_folds_and_beats_chance(arch, tmp_path):
    store = _separable_store(tmp_path / "store")
    m = get_classic(arch)
    prof = get_profile("smoke", finetune_epochs=1, max_steps_per_epoch=5,
                       finetune_batch_size=16)
    proto = Protocol("fixed", train_subjects=["0", "1"], val_subjects=["2"], test_subjects=["3"])
    res = experiments.finetune(m, store, protocol=proto, profile=prof, run_dir=tmp_path / "runs",
                               seeds=[0])
    r = res.results
    assert len(r) == 1 and r["method"].iloc[0] == arch and r["variant"].iloc[0] == "scratch"
    assert {"method", "variant", "mode", "dataset", "protocol", "fold", "seed", "n_train",
            "n_test", *METRICS} <= set(r.columns)
    assert r["protocol"].iloc[0] == "fixed" and r["mode"].iloc[0] == "full"
    assert (r["n_train"].iloc[0], r["n_val"].iloc[0], r["n_test"].iloc[0]) == (80, 40, 40)
    assert len(res.predictions) == 40 and (res.out_dir / "results.csv").exists()
    assert r["balanced_accuracy"].iloc[0] >= 0.8  # chance is 0.5


def test_missing_braindecode_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "braindecode.models", None)  # unimportable
    with pytest.raises(ImportError, match=r"pip install -e '\.\[bench\]'"):
        _net("eegnet", 128.0, 256)
