"""The EEGPT method on the platform: one rate per pre-training batch, whole-second windows,
multi-task heads that only read their own task, data fractions, held-out losses, features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import experiments
from workbench.config import get_profile
from workbench.data.datasets import ConcatDataset, WindowDataset, make_loader
from workbench.data.store import WindowStore
from workbench.experiments.multitask import (
    MultiTaskClassifier,
    MultiTaskObjective,
    RoundRobinLoader,
)
from workbench.methods import get_method
from workbench.methods.eegpt import (
    RateGroupedDataset,
    fraction_store,
    heldout_pretrain_loss,
    multitask_splits,
)
from workbench.models.eegpt import masked_electrode_mean

TINY = get_profile("smoke", pretrain_epochs=1, finetune_epochs=1, max_steps_per_epoch=2,
                   max_subjects=2, synthetic_subjects=3, synthetic_sessions=1,
                   synthetic_trials=4, synthetic_trial_s=4.0, pretrain_batch_size=16,
                   finetune_batch_size=8)


@pytest.fixture(scope="module")
def m():
    return get_method("eegpt")


@pytest.fixture(scope="module")
def stores(m, tmp_path_factory):
    cache = tmp_path_factory.mktemp("eegpt_cache")
    return {d: m.load_store(d, profile=TINY, cache_dir=cache) for d in ("syn_seed", "syn_dreamer")}


def _store(root, sfreq, n_times, n=12, chans=("Fz", "Cz", "Pz"), seed=0):
    rng = np.random.default_rng(seed)
    index = pd.DataFrame({"dataset": "toy", "subject": [str(i % 3) for i in range(n)],
                          "session": "1", "recording": "r", "trial": np.arange(n),
                          "label": np.arange(n) % 2, "start": 0, "start_s": 0.0})
    x = rng.standard_normal((n, len(chans), n_times)).astype(np.float32) * 20
    return WindowStore.from_arrays(root, x, index, list(chans), sfreq, dataset="toy",
                                   label_names={0: "a", 1: "b"})


def test_stores_are_resampled_to_one_rate_of_whole_second_windows(m, stores):
    for s in stores.values():  # syn_seed is native 200 Hz, syn_dreamer 128 Hz
        assert s.sfreq == m.sfreq == 200.0 and s.n_times == int(m.window_s * m.sfreq)


def test_pretraining_batches_never_mix_rates(m, tmp_path):
    # same window length (1000 samples), different rates: 2 s at 500 Hz and 4 s at 250 Hz
    a, b = _store(tmp_path / "a", 500.0, 1000), _store(tmp_path / "b", 250.0, 1000, seed=1)
    vocab = m.vocabulary([a, b])
    plain = ConcatDataset([WindowDataset(a, None, vocab), WindowDataset(b, None, vocab)])
    mixed = [len(set(bt["rate_id"].tolist())) > 1
             for bt in make_loader(plain, 8, shuffle=True, seed=0)]
    assert any(mixed)  # grouping by window length alone would put both rates in one batch
    ds = m.pretrain_dataset([a, b], vocab)
    assert isinstance(ds, RateGroupedDataset)
    for seed in range(3):
        for bt in make_loader(ds, 8, shuffle=True, seed=seed):
            assert len(set(bt["rate_id"].tolist())) == 1


@pytest.mark.parametrize("sfreq, n_times", [(200.0, 500), (200.0, 200)])
def test_windows_must_be_two_or_more_whole_seconds(m, tmp_path, sfreq, n_times):
    s = _store(tmp_path / "w", sfreq, n_times)
    vocab = m.vocabulary([s])
    with pytest.raises(ValueError, match="whole number"):
        m.pretrain_dataset([s], vocab)
    with pytest.raises(ValueError, match="whole number"):
        m.build_pretrain("eegpt", "tiny", vocab, [s])


def test_variants_switch_one_field(m, stores):
    s = stores["syn_dreamer"]
    vocab = m.vocabulary([s])
    models = {v: m.build_pretrain(v, "tiny", vocab, [s])[0] for v in m.variants}
    assert models["eegpt"].mode == "ar" and models["mae"].mode == "mae"
    assert models["no_pos"].encoder.decoder.rope is None
    assert models["eegpt"].encoder.decoder.rope is not None
    clf, spec = m.build_classifier("attention_pool", "tiny", s, vocab, 2, None)
    assert clf.pool.kind == "attention" and spec["overrides"]["input_scale"] == m.input_scale


def test_features_are_mean_pooled_last_tokens(m, stores):
    s = stores["syn_dreamer"]
    vocab = m.vocabulary([s])
    torch.manual_seed(0)
    clf, _ = m.build_classifier("eegpt", "tiny", s, vocab, 2, None)
    batch = next(iter(make_loader(WindowDataset(s, np.arange(5), vocab), 5, shuffle=False)))
    batch["ch_mask"][0, -3:] = False  # padding electrodes do not enter the mean
    with torch.no_grad():
        tok = clf.encoder(batch["x"], batch["ch_ids"], batch["rate_id"],
                          batch["ch_mask"])["tokens"]
        expect = torch.stack([tok[i, batch["ch_mask"][i], -1].mean(0) for i in range(5)])
        torch.testing.assert_close(m.features(clf, batch), expect, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(masked_electrode_mean(tok[:, :, -1], batch["ch_mask"]), expect,
                                   rtol=1e-5, atol=1e-6)


def test_multitask_batches_reach_only_their_own_head(m, stores):
    seed_s, dream = stores["syn_seed"], stores["syn_dreamer"]
    assert (seed_s.n_classes, dream.n_classes) == (3, 2)
    vocab = m.vocabulary([seed_s, dream])
    torch.manual_seed(0)
    backbone, _ = m.build_classifier("eegpt", "tiny", seed_s, vocab, 3, None)
    model = MultiTaskClassifier(backbone, [3, 2], backbone.head[-1].in_features)
    loader = RoundRobinLoader([make_loader(WindowDataset(s, None, vocab), 8, shuffle=True, seed=0)
                               for s in (seed_s, dream)])
    seen = set()
    for batch in loader:
        t = int(batch["task"][0])
        assert (batch["task"] == t).all()  # one task per batch
        assert batch["x"].shape[1] == len((seed_s, dream)[t].ch_names)
        with torch.no_grad():
            logits = model(batch["x"], task=t, ch_ids=batch["ch_ids"], rate_id=batch["rate_id"],
                           ch_mask=batch["ch_mask"])["logits"]
        assert logits.shape == (len(batch["x"]), (3, 2)[t]) and batch["y"].max() < (3, 2)[t]
        seen.add(t)
    assert seen == {0, 1}
    # a batch that mixes tasks is refused rather than read by one head
    b0, b1 = next(iter(loader.loaders[0])), next(iter(loader.loaders[1]))
    mixed = {k: torch.cat([b0[k][:2], b1[k][:2]]) for k in ("y", "rate_id")}
    mixed.update(x=torch.zeros(4, 3, 800), task=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="one task"):
        MultiTaskObjective()(model, mixed)


@pytest.mark.slow
def test_joint_run_predicts_each_task_with_its_own_head(m, stores, tmp_path):
    seed_s, dream = stores["syn_seed"], stores["syn_dreamer"]
    res = experiments.finetune_multitask(m, [seed_s, dream], run_dir=tmp_path, profile=TINY,
                                         variant="scratch", seeds=[0],
                                         protocol="within_subject")
    assert set(res.results["dataset"]) == {"syn_seed", "syn_dreamer"}
    for s in (seed_s, dream):
        pred = res.predictions[res.predictions["dataset"] == s.dataset]
        probs = pred.filter(regex=r"^p\d+$").dropna(axis=1, how="all")
        assert probs.shape[1] == s.n_classes  # its own head's classes, no other task's
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert pred["y"].between(0, s.n_classes - 1).all()
        # the test windows are the pooled within-subject fold of multitask_splits
        (sp,) = multitask_splits("within_subject", s, seed=0)
        assert sorted(pred["window_id"]) == sorted(sp.test)
        row = res.results[res.results["dataset"] == s.dataset].iloc[0]
        assert row["n_classes"] == s.n_classes and row["tasks"] == "syn_seed+syn_dreamer"


def test_fraction_store_is_a_reused_subset(stores):
    s = stores["syn_dreamer"]
    half = fraction_store(s, 0.5, seed=3)
    assert len(half) == round(0.5 * len(s)) and half.ch_names == s.ch_names
    parent = s.index.set_index(["subject", "session", "recording", "trial", "start"])
    key = list(zip(*(half.index[c] for c in ("subject", "session", "recording", "trial",
                                             "start"))))
    pos = parent.index.get_indexer(key)
    assert (pos >= 0).all()  # rows keep their parent's index columns
    np.testing.assert_array_equal(half.get(np.arange(len(half))), s.get(pos))
    mtime = (half.root / "windows.f32").stat().st_mtime_ns
    again = fraction_store(s, 0.5, seed=3)
    assert again.root == half.root and (again.root / "windows.f32").stat().st_mtime_ns == mtime
    assert fraction_store(s, 1.0) is s
    with pytest.raises(ValueError, match="fraction"):
        fraction_store(s, 0.0)


def test_heldout_loss_is_the_objective_on_those_windows(m, stores, tmp_path):
    s = stores["syn_dreamer"]
    pre = experiments.pretrain(m, [s], run_dir=tmp_path, profile=TINY, seed=0)
    ids = np.arange(10)
    loss = heldout_pretrain_loss(pre.out_dir, s, preset="tiny", indices=ids, batch_size=3)
    state, vocab = experiments.load_pretrained(pre.out_dir)
    model, _, objective = m.build_pretrain("eegpt", "tiny", vocab, [s])
    model.load_state_dict(state)
    model.eval()
    batch = next(iter(make_loader(WindowDataset(s, ids, vocab), 10, shuffle=False)))
    with torch.no_grad():
        ref = float(objective(model, batch)[0])
    assert loss == pytest.approx(ref, rel=1e-5)
