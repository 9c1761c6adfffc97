"""Contract tests over the registries: every registered model and method, the day it is registered.

Models: outputs are a dict of finite tensors, the same seed builds the same model (and another
seed another one). Methods: every variant builds; the pre-training objective gives a finite loss
and a gradient to every trainable parameter; the classifier returns logits and an embedding,
trains every parameter, overfits one batch and takes the pre-trained weights; every protocol and
every adaptation mode runs one tiny fold.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from workbench import experiments
from workbench.config import get_profile
from workbench.data.datasets import WindowDataset, make_loader
from workbench.evaluation.protocols import PROTOCOLS, Protocol
from workbench.methods import MODES, get_method, list_methods
from workbench.models import create_model, list_models

TINY = get_profile("smoke", pretrain_epochs=1, finetune_epochs=1, max_steps_per_epoch=2,
                   max_subjects=2, synthetic_subjects=3, synthetic_sessions=1,
                   synthetic_trials=4, synthetic_trial_s=4.0, pretrain_batch_size=16,
                   finetune_batch_size=8)
DATASET = "syn_dreamer"  # 14 channels, 128 Hz, 2 classes


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("contract_cache")


def _store(m, cache, dataset=DATASET):
    return m.load_store(dataset, profile=TINY, cache_dir=cache)


def _batch(store, vocab, n=6):
    ds = WindowDataset(store, np.arange(n), vocab)
    return next(iter(make_loader(ds, n, shuffle=False)))


def _call(model, batch):
    return model(batch["x"], ch_ids=batch["ch_ids"], rate_id=batch["rate_id"],
                 ch_mask=batch["ch_mask"])


def _example(name, seed=0):
    """A model built from its tiny preset (``n_outputs=3`` where it takes one) and an input."""
    torch.manual_seed(seed)
    sig = inspect.signature(create_model.__globals__["_MODELS"][name])
    kw = {"n_outputs": 3} if "n_outputs" in sig.parameters else {}
    model = create_model(name, "tiny", **kw).eval()
    c = getattr(model, "n_chans", None) or 4
    # patch models (patch_len on the model or its encoder): a whole number of patches
    patch = getattr(model, "patch_len", None) or getattr(getattr(model, "encoder", None),
                                                         "patch_len", None)
    t = 4 * patch if patch else 256
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, c, t, generator=g)
    return model, {"x": x, "ch_ids": torch.arange(c).expand(2, c).clone(),
                   "ch_mask": torch.ones(2, c, dtype=torch.bool),
                   "rate_id": torch.zeros(2, dtype=torch.int64)}


@pytest.mark.parametrize("name", list_models())
def test_model_outputs_and_seed(name):
    model, batch = _example(name)
    with torch.no_grad():
        out = _call(model, batch)
    assert isinstance(out, dict) and out
    tensors = {k: v for k, v in out.items() if torch.is_tensor(v)}
    assert tensors, f"{name} returns no tensor"
    for k, v in tensors.items():
        assert torch.isfinite(v.float()).all(), f"{name}: NaN/inf in {k!r}"
    if "logits" in out:
        assert out["logits"].shape == (2, 3)
    if "embedding" in out:
        assert out["embedding"].shape[0] == 2
    same, _ = _example(name, seed=0)
    other, _ = _example(name, seed=1)
    sd, so, sm = same.state_dict(), other.state_dict(), model.state_dict()
    assert all(torch.equal(sm[k], sd[k]) for k in sm)
    assert any(not torch.equal(sm[k], so[k]) for k in sm if sm[k].is_floating_point())


@pytest.mark.parametrize("method", list_methods())
def test_method_contract(method, cache):
    m = get_method(method)
    assert m.default_mode in MODES and m.default_variant in m.variants
    for row in m.paper_table().itertuples():
        assert 0 <= row.value <= 1 and row.metric in experiments.METRICS and row.source
    store = _store(m, cache)
    vocab = m.vocabulary([store])
    batch = _batch(store, vocab)
    # every variant builds its pre-training model and its classifier from that model's weights
    for name, v in m.variants.items():
        model, spec, objective = m.build_pretrain(name, "tiny", vocab, [store])
        assert spec["name"] in list_models()
        clf, _ = m.build_classifier(name, "tiny", store, vocab, store.n_classes,
                                    model.state_dict() if v.pretrained else None)
        out = _call(clf, batch)
        assert out["logits"].shape == (len(batch["x"]), store.n_classes)
        assert out["embedding"].shape[0] == len(batch["x"])
    # the pre-training objective trains every trainable parameter
    model, _, objective = m.build_pretrain(m.default_variant, "tiny", vocab, [store])
    loader = make_loader(m.pretrain_dataset([store], vocab), 8, shuffle=False)
    loss, logs = objective(model, next(iter(loader)))
    assert torch.isfinite(loss) and "loss" in logs
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent, f"{method} pre-training: no gradient for {silent[:5]}"
    # the classifier takes the pre-trained weights and trains every parameter
    clf, _ = m.build_classifier(m.default_variant, "tiny", store, vocab, store.n_classes,
                                model.state_dict())
    enc = m.encoder_parameter_names(clf)
    assert enc and set(enc) < {n for n, _ in clf.named_parameters()}
    torch.nn.functional.cross_entropy(_call(clf, batch)["logits"], batch["y"]).backward()
    silent = [n for n, p in clf.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent, f"{method} classifier: no gradient for {silent[:5]}"


@pytest.mark.parametrize("method", list_methods())
def test_classifier_overfits_one_batch(method, cache):
    m = get_method(method)
    store = _store(m, cache)
    vocab = m.vocabulary([store])
    batch = _batch(store, vocab, n=8)
    torch.manual_seed(0)
    clf, _ = m.build_classifier(m.default_variant, "tiny", store, vocab, store.n_classes, None)
    clf.train()
    for mod in clf.modules():  # dropout off: a fixed target
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(_call(clf, batch)["logits"], batch["y"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def _protocol(name):
    return {"within_subject": Protocol("within_subject", max_folds=1),
            "subject_kfold": Protocol("subject_kfold", folds=3, max_folds=1, val_size=0.5),
            "loso": Protocol("loso", max_folds=1, val_size=0.5),
            "fixed": Protocol("fixed", train_subjects=["1"], val_subjects=["02"],
                              test_subjects=["03"]),
            "cross_dataset": Protocol("cross_dataset", train_datasets=["syn_deap"])}[name]


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_every_protocol_and_mode_runs_one_fold(method, cache, tmp_path):
    m = get_method(method)
    store = _store(m, cache)
    pre = experiments.pretrain(m, [store], run_dir=tmp_path, profile=TINY, seed=0)
    runs = [("within_subject", mode) for mode in MODES]
    runs += [(p, m.default_mode) for p in PROTOCOLS if p != "within_subject"]
    for protocol, mode in runs:
        train_stores = []
        if protocol == "cross_dataset":
            if not m.any_montage:
                continue  # one channel layout: nothing to transfer across montages
            train_stores = [_store(m, cache, "syn_deap")]
        res = experiments.finetune(m, store, run_dir=tmp_path, profile=TINY, mode=mode,
                                   pretrained=pre.out_dir, seeds=[0],
                                   protocol=_protocol(protocol), train_stores=train_stores)
        row = res.results.iloc[0]
        assert len(res.results) == 1 and row["protocol"] == protocol and row["mode"] == mode
        assert 0 <= row["balanced_accuracy"] <= 1
