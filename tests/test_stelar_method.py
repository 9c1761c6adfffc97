"""Tests of the STELAR method: the 10-20 data layout, the vocabulary-to-row mapping, the channel
adapter, linear probing's configuration, the variants and the paper's Table 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import experiments
from workbench.channels import ChannelVocabulary
from workbench.config import get_profile
from workbench.data.datasets import WindowDataset, make_loader
from workbench.methods import get_method
from workbench.methods.stelar import ROWS, TEN_TWENTY

TINY = get_profile("smoke", synthetic_subjects=3, synthetic_sessions=1, synthetic_trials=4,
                   synthetic_trial_s=4.0, pretrain_batch_size=16, finetune_batch_size=8)


@pytest.fixture(scope="module")
def m():
    return get_method("stelar")


@pytest.fixture(scope="module")
def stores(m, tmp_path_factory):
    cache = tmp_path_factory.mktemp("stelar_cache")
    return {d: m.load_store(d, profile=TINY, cache_dir=cache)
            for d in ("syn_deap", "syn_dreamer")}


def test_data_layout(m, stores):
    deap = stores["syn_deap"]
    assert deap.sfreq == 200.0 and deap.n_times == 800  # 4 s = 4 patches of 200 samples
    x = deap.get(np.arange(5))
    np.testing.assert_allclose(x.min(-1), -1.0, atol=1e-6)  # each channel of each window
    np.testing.assert_allclose(x.max(-1), 1.0, atol=1e-6)
    assert len(TEN_TWENTY) == 19 and sorted(ROWS) == sorted(TEN_TWENTY)


def test_pretraining_sees_only_the_1020_channels(m, stores):
    vocab = m.vocabulary(list(stores.values()))
    ds = m.pretrain_dataset([stores["syn_deap"], stores["syn_dreamer"]], vocab)
    batch = next(iter(make_loader(ds, 64, shuffle=False)))
    names = set(np.asarray(vocab.names)[batch["ch_ids"][batch["ch_mask"]].numpy()])
    assert names <= set(TEN_TWENTY)
    assert batch["x"].shape[1] == 19  # DEAP holds all 19; DREAMER's 10 are padded to 19
    per_window = batch["ch_mask"].sum(1).unique().tolist()
    assert sorted(per_window) == [10, 19]


def test_channels_without_a_row_are_left_out(m, stores):
    """A channel outside the 10-20 set (AF3) is padding for the model: perturbing it changes
    no token of the other channels, and its patches are never masked."""
    store = stores["syn_deap"]
    vocab = m.vocabulary([store])
    torch.manual_seed(0)
    model, spec, _ = m.build_pretrain("mtpe_gb", "tiny", vocab, [store])
    assert spec["overrides"]["vocab_ids"] == vocab.ids(list(ROWS)).tolist()
    model.eval()
    chans = ["Fp1", "AF3", "Cz", "O2"]
    batch = next(iter(make_loader(WindowDataset(store, np.arange(4), vocab, chans), 4,
                                  shuffle=False)))
    x2 = batch["x"].clone()
    x2[:, 1] = torch.randn_like(x2[:, 1]) * 5
    with torch.no_grad():
        a = model.encode(batch["x"], ch_ids=batch["ch_ids"], ch_mask=batch["ch_mask"])
        b = model.encode(x2, ch_ids=batch["ch_ids"], ch_mask=batch["ch_mask"])
        out = model(batch["x"], ch_ids=batch["ch_ids"], ch_mask=batch["ch_mask"],
                    generator=torch.Generator().manual_seed(0))
    keep = [0, 2, 3]
    torch.testing.assert_close(a["tokens"][:, keep], b["tokens"][:, keep], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["embedding"], b["embedding"], rtol=1e-5, atol=1e-6)
    assert not out["mask"][:, 1].any() and out["mask"][:, keep].any()
    # the embedding is the mean of the three 10-20 channels' tokens
    torch.testing.assert_close(a["embedding"], a["tokens"][:, keep].mean((1, 2)), rtol=1e-5,
                               atol=1e-6)


def test_pretrain_features_are_the_unmasked_encoding(m, stores):
    """Features come from ``encode`` (no random mask): deterministic, each 10-20 channel's
    patch-mean token at its row, zeros for the rows a montage lacks."""
    store = stores["syn_dreamer"]  # 10 of the 19 channels
    vocab = m.vocabulary([store])
    torch.manual_seed(0)
    model, _, _ = m.build_pretrain("mtpe_gb", "tiny", vocab, [store])
    model.eval()
    batch = next(iter(make_loader(WindowDataset(store, np.arange(6), vocab), 6, shuffle=False)))
    f1 = m.pretrain_features(model, batch)
    torch.testing.assert_close(f1, m.pretrain_features(model, batch), rtol=0, atol=0)
    d = model.encoder.dim
    feats = f1.view(6, len(ROWS), d)
    with torch.no_grad():
        tokens = model.encode(batch["x"], ch_ids=batch["ch_ids"],
                              ch_mask=batch["ch_mask"])["tokens"]
    for c, name in enumerate(store.ch_names):
        if name in ROWS:
            torch.testing.assert_close(feats[:, ROWS.index(name)], tokens[:, c].mean(1),
                                       rtol=1e-5, atol=1e-6)
    absent = [r for r, name in enumerate(ROWS) if name not in store.ch_names]
    assert len(absent) == 9 and not feats[:, absent].abs().sum()


def test_classifier_adapter_and_pretrained_encoder(m, stores):
    store = stores["syn_deap"]
    vocab = m.vocabulary([store])
    torch.manual_seed(0)
    pre, _, _ = m.build_pretrain("mtpe_gb", "tiny", vocab, [store])
    state = pre.state_dict()
    clf, spec = m.build_classifier("mtpe_gb", "tiny", store, vocab, 2, state, head="linear")
    w = clf.adapter.conv.weight[:, :, 0]  # (19, 32)
    for row, name in enumerate(ROWS):  # each 10-20 channel copied from the dataset's
        expected = torch.zeros(len(store.ch_names))
        expected[store.ch_names.index(name)] = 1.0
        torch.testing.assert_close(w[row], expected)
    enc = {k: v for k, v in state.items() if k.startswith("encoder.")}
    for k, v in clf.state_dict().items():
        if k.startswith("encoder."):
            torch.testing.assert_close(v, enc[k], rtol=0, atol=0)
    names = m.encoder_parameter_names(clf)
    assert names and all(n.startswith("encoder.") for n in names)
    trainable = {n for n, _ in clf.named_parameters()} - set(names)
    assert trainable == {"adapter.conv.weight", "adapter.conv.bias", "head.fc.weight",
                         "head.fc.bias"}
    # the random-encoder reference loads nothing
    rnd, _ = m.build_classifier("random_encoder", "tiny", store, vocab, 2, state)
    key = next(k for k, v in enc.items() if v.dim() == 2)
    assert not torch.equal(rnd.state_dict()[key], enc[key])
    # any montage through the adapter: 14 DREAMER channels in, 2 logits out
    dreamer = stores["syn_dreamer"]
    clf14, _ = m.build_classifier("mtpe_gb", "tiny", dreamer, vocab, 2, state)
    batch = next(iter(make_loader(WindowDataset(dreamer, np.arange(3), vocab), 3,
                                  shuffle=False)))
    assert clf14(batch["x"], ch_ids=batch["ch_ids"], ch_mask=batch["ch_mask"])[
        "logits"].shape == (3, 2)


def test_linear_probing_configuration(m, stores):
    assert m.default_mode == "linear" and m.default_variant == "mtpe_gb"
    assert m.selection_metric(4) == "cohen_kappa" and m.selection_metric(2) == "auc_pr"
    cfg = m.finetune_config(get_profile("paper"), stores["syn_deap"], "linear")
    assert (cfg.max_lr, cfg.weight_decay, cfg.schedule, cfg.warmup_frac, cfg.batch_size,
            cfg.keep_top_k) == (5e-4, 0.05, "onecycle", 0.2, 64, 1)
    pre = m.pretrain_config(get_profile("paper"))
    assert (pre.lr, pre.weight_decay, pre.epochs, pre.batch_size, pre.warmup_steps,
            pre.warmup_frac, pre.grad_clip) == (1e-4, 1e-4, 30, 64, 500, 0.1, 1.0)


def test_variants_are_one_switch(m):
    base = m.variants["mtpe_gb"]
    for name, v in m.variants.items():
        diffs = [dict(v.model) != dict(base.model), dict(v.objective) != dict(base.objective),
                 v.pretrained != base.pretrained, dict(v.classifier) != dict(base.classifier)]
        assert sum(diffs) == (0 if name == "mtpe_gb" else 1), name
    grid = {n: v.objective["w_lat"] for n, v in m.variants.items() if n.startswith("fixed_")}
    assert sorted(grid.values()) == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert m.variants["mask_0.3"].model == {"mask_ratio": 0.3}
    assert m.variants["mtpe_gb_inverse"].objective["rule"] == "inverse"


def test_paper_table1(m):
    t = m.paper_table()
    assert len(t) == 21 and set(t["variant"]) == {"mtpe_gb"}
    assert set(t["metric"]) <= set(experiments.METRICS)
    binary = set(t[t["metric"] == "auc_pr"]["dataset"])
    assert binary == {"TUAB", "KaggleERN"}
    got = t.set_index(["dataset", "metric"])["value"]
    assert got[("BCIC-2A", "cohen_kappa")] == pytest.approx(0.4540)
    assert got[("TUAB", "auroc")] == pytest.approx(0.8745)
    assert (t["value"].between(0, 1)).all() and t["source"].str.contains("Table 1").all()


def test_vocabulary_loads_any_montage(m, stores):
    vocab = m.vocabulary([stores["syn_dreamer"]])
    eegmmidb_only = ["AF7", "AFz", "T9", "T10", "Iz", "FT8"]
    assert all(c in vocab for c in [*TEN_TWENTY, *eegmmidb_only])
    assert isinstance(vocab, ChannelVocabulary)


def test_invalid_rows_and_names_raise():
    from workbench.models import create_model

    with pytest.raises(ValueError, match="vocab_ids"):
        create_model("stelar", "tiny", n_channels=19, vocab_ids=list(range(18)))
    with pytest.raises(ValueError, match="channel_names"):
        create_model("stelar_classifier", "tiny", n_channels=19, n_chans=3,
                     adapter_channels=list(ROWS), channel_vocab=list(ROWS),
                     channel_names=["Fp1", "Cz"])
