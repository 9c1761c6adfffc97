"""The method-agnostic drivers on a tiny synthetic corpus: every registered method pre-trains
(loss falls), fine-tunes or probes under the leakage-free protocol, and its variants build."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from workbench import experiments
from workbench.config import get_profile
from workbench.data.corpus import load_store
from workbench.methods import get_method, list_methods

TINY = get_profile("smoke", pretrain_epochs=3, finetune_epochs=2, max_steps_per_epoch=4,
                   max_subjects=2, synthetic_subjects=2, synthetic_sessions=1,
                   synthetic_trials=6, pretrain_batch_size=64, finetune_batch_size=16)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _store(method, dataset, cache):
    m = get_method(method)
    return load_store(dataset, profile=TINY, window_s=m.window_s, overlap_s=m.overlap_s,
                      scale=m.scale, cache_dir=cache)


def test_methods_registered():
    assert {"omfa", "eegm2"} <= set(list_methods())
    with pytest.raises(ValueError, match="method"):
        get_method("nope")


def test_store_cache_is_reused(cache):
    a = _store("omfa", "syn_dreamer", cache)
    b = _store("omfa", "syn_dreamer", cache)
    assert a.root == b.root
    c = load_store("syn_dreamer", profile=TINY, window_s=1.0, cache_dir=cache)
    assert c.root != a.root and c.n_times == 128


@pytest.mark.slow
@pytest.mark.parametrize("method,datasets,mode", [
    ("omfa", ["syn_deap", "syn_dreamer"], "fine"),
    ("eegm2", ["syn_dreamer"], "probe"),
])
def test_pretrain_then_downstream(method, datasets, mode, cache, tmp_path):
    m = get_method(method)
    stores = [_store(method, d, cache) for d in datasets]
    pre = experiments.pretrain(m, stores, out_dir=tmp_path / "pre", profile=TINY, seed=0)
    assert pre.history["loss"].iloc[-1] < pre.history["loss"].iloc[0]
    assert pre.checkpoint.exists() and (tmp_path / "pre" / "vocab.json").exists()
    target = stores[-1]
    res = experiments.finetune(m, target, out_dir=tmp_path / "ft", profile=TINY,
                               pretrained=pre.out_dir, mode=mode, seeds=[0])
    assert len(res.results) == 2 and set(res.results["subject"]) == {"01", "02"}
    assert res.results["accuracy"].between(0, 1).all()
    # predictions are the test windows of each subject, nothing else
    p = res.predictions
    assert np.allclose(p[["p0", "p1"]].sum(axis=1), 1.0)
    assert (target.index.loc[p["window_id"], "subject"].to_numpy() == p["subject"].to_numpy()).all()
    assert (tmp_path / "ft" / "results.csv").exists()
    # the pre-trained representation differs from the random one
    emb, ids = experiments.pretrained_embeddings(m, target, pretrained=pre.out_dir, profile=TINY,
                                                 indices=np.arange(8))
    rnd, _ = experiments.pretrained_embeddings(m, target, pretrained=None, profile=TINY,
                                               indices=np.arange(8))
    assert emb.shape[0] == 8 and not np.allclose(emb, rnd)


def test_finetune_requires_pretrained_for_pretrained_variants(cache, tmp_path):
    store = _store("omfa", "syn_dreamer", cache)
    with pytest.raises(ValueError, match="pretrained"):
        experiments.finetune("omfa", store, out_dir=tmp_path, profile=TINY, variant="art_gat")
    with pytest.raises(ValueError, match="mode"):
        experiments.finetune("omfa", store, out_dir=tmp_path, profile=TINY, variant="scratch",
                             mode="zero-shot")


def test_paper_comparison_table():
    table = pd.DataFrame({"variant": ["art_gat", "art_gat", "gcn"], "accuracy": [0.8, 0.9, 0.7]})
    out = experiments.paper_comparison("omfa", table, "DEAP").set_index("variant")
    assert out.loc["art_gat", "ours_mean"] == pytest.approx(85.0)
    assert out.loc["art_gat", "paper_DEAP"] == pytest.approx(93.69)
    assert out.loc["gcn", "paper_DEAP"] == pytest.approx(71.50)


@pytest.mark.slow
def test_run_folders_are_reused_only_for_identical_settings(cache, tmp_path, caplog):
    store = _store("omfa", "syn_dreamer", cache)
    pre = experiments.pretrain("omfa", [store], out_dir=tmp_path / "pre", profile=TINY, seed=0)
    ckpt = pre.checkpoint.read_bytes()
    # same settings: reused from the folder itself or from `reuse`, nothing retrained
    again = experiments.pretrain("omfa", [store], out_dir=tmp_path / "pre", profile=TINY, seed=0)
    assert again.seconds == pre.seconds and pre.checkpoint.read_bytes() == ckpt
    other = experiments.pretrain("omfa", [store], out_dir=tmp_path / "own", profile=TINY,
                                 seed=0, reuse=tmp_path / "pre")
    assert other.out_dir == tmp_path / "pre" and not (tmp_path / "own").exists()
    # other settings: `reuse` is ignored and a folder of other settings is retrained
    longer = dataclasses.replace(TINY, pretrain_epochs=4)
    res = experiments.pretrain("omfa", [store], out_dir=tmp_path / "own", profile=longer,
                               seed=0, reuse=tmp_path / "pre")
    assert res.out_dir == tmp_path / "own" and len(res.history) == 4
    assert pre.checkpoint.read_bytes() == ckpt
    with caplog.at_level("WARNING", logger="workbench"):
        res = experiments.pretrain("omfa", [store], out_dir=tmp_path / "own", profile=TINY,
                                   seed=0)
    assert len(res.history) == 3 and "other settings (train_config differ)" in caplog.text

    # fine-tuning: reused only from the same pre-trained checkpoint
    ft = experiments.finetune("omfa", store, out_dir=tmp_path / "ft", profile=TINY,
                              pretrained=pre.out_dir, seeds=[0])
    table = experiments.ablation_study(
        "omfa", [store], store, out_dir=tmp_path / "abl", profile=TINY, seeds=[0],
        variants=["art_gat", "nograph"], reuse_pretrained={"adaptive": tmp_path / "pre"},
        reuse_finetuned=tmp_path / "ftroot")
    assert not (tmp_path / "abl" / "pretrain-adaptive").exists()
    assert (tmp_path / "abl" / "finetune-art_gat").exists()  # ftroot/art_gat does not exist
    (tmp_path / "ftroot").mkdir()
    (tmp_path / "ft").rename(tmp_path / "ftroot" / "art_gat")
    table2 = experiments.ablation_study(
        "omfa", [store], store, out_dir=tmp_path / "abl2", profile=TINY, seeds=[0],
        variants=["art_gat"], reuse_pretrained={"adaptive": tmp_path / "pre"},
        reuse_finetuned=tmp_path / "ftroot")
    own = tmp_path / "abl2" / "finetune-art_gat"
    assert (own / "results.csv").exists() and not list(own.glob("seed*"))  # nothing trained
    pd.testing.assert_frame_equal(table2, ft.results)
    # a reused folder lacking a requested seed is not used (nor written to)
    experiments.ablation_study(
        "omfa", [store], store, out_dir=tmp_path / "abl3", profile=TINY, seeds=[0, 1],
        variants=["art_gat"], reuse_pretrained={"adaptive": tmp_path / "pre"},
        reuse_finetuned=tmp_path / "ftroot")
    assert list((tmp_path / "abl3" / "finetune-art_gat").glob("seed*"))
    assert not (tmp_path / "ftroot" / "art_gat" / "seed1").exists()
    assert np.allclose(table.loc[table["variant"] == "art_gat", "accuracy"],
                       ft.results["accuracy"])
