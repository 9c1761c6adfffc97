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
from workbench.runs import RunLayout

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
    ("omfa", ["syn_deap", "syn_dreamer"], "full"),
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
                               pretrained=pre.out_dir, mode=mode, seeds=[0], baseline=True)
    ours = res.results[res.results["variant"] == m.default_variant]
    assert len(ours) == 2 and set(ours["subject"]) == {"01", "02"}
    assert set(ours["protocol"]) == {"within_subject"} and not ours["confounded"].any()
    assert res.results["accuracy"].between(0, 1).all()
    assert (res.results["variant"] == "DE baseline").sum() == 2  # same folds
    # predictions are the test windows of each subject, nothing else
    p = res.predictions
    assert np.allclose(p[["p0", "p1"]].sum(axis=1), 1.0)
    subj = target.index.loc[p["window_id"], "subject"].to_numpy()
    assert (("subject" + subj) == p["fold"].to_numpy()).all()
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
    with pytest.raises(ValueError, match="from scratch"):
        experiments.finetune("omfa", store, out_dir=tmp_path, profile=TINY, variant="scratch",
                             mode="linear")


def test_paper_comparison_is_on_the_papers_metric():
    table = pd.DataFrame({"variant": ["art_gat", "art_gat", "gcn"], "accuracy": [0.8, 0.9, 0.7],
                          "balanced_accuracy": [0.5, 0.6, 0.4]})
    out = experiments.paper_comparison("omfa", table, "DEAP").set_index("variant")
    assert set(out["metric"]) == {"accuracy"}  # the paper reports accuracy
    assert out.loc["art_gat", "ours_mean"] == pytest.approx(0.85)
    assert out.loc["art_gat", "paper"] == pytest.approx(0.9369)
    assert out.loc["gcn", "paper"] == pytest.approx(0.7150)
    eegm2 = pd.DataFrame({"variant": ["eegm2"] * 2, "accuracy": [0.9, 0.9],
                          "balanced_accuracy": [0.6, 0.7], "auroc": [0.7, 0.8]})
    out = experiments.paper_comparison("eegm2", eegm2, "TUAB").set_index("metric")
    assert set(out.index) == {"balanced_accuracy", "auroc"}  # never accuracy vs B-Acc
    assert out.loc["balanced_accuracy", "ours_mean"] == pytest.approx(0.65)
    assert out.loc["balanced_accuracy", "paper"] == pytest.approx(0.8087)


@pytest.mark.slow
def test_runs_are_found_by_their_settings(cache, tmp_path, caplog):
    store = _store("omfa", "syn_dreamer", cache)
    layout = RunLayout(tmp_path / "runs")
    pre = experiments.pretrain("omfa", [store], run_dir=layout, profile=TINY, seed=0)
    ckpt = pre.checkpoint.read_bytes()
    # same settings: the same folder, reused, nothing retrained
    again = experiments.pretrain("omfa", [store], run_dir=layout, profile=TINY, seed=0)
    assert again.out_dir == pre.out_dir and again.seconds == pre.seconds
    assert pre.checkpoint.read_bytes() == ckpt
    # variants that pre-train the same encoder share it; another encoder gets its own run
    nograph = experiments.pretrain("omfa", [store], run_dir=layout, profile=TINY, seed=0,
                                   variant="nograph")
    fixed = experiments.pretrain("omfa", [store], run_dir=layout, profile=TINY, seed=0,
                                 variant="fixed_patch")
    assert nograph.out_dir == pre.out_dir and fixed.out_dir != pre.out_dir
    # other settings: another folder
    longer = dataclasses.replace(TINY, pretrain_epochs=4)
    res = experiments.pretrain("omfa", [store], run_dir=layout, profile=longer, seed=0)
    assert res.out_dir != pre.out_dir and len(res.history) == 4
    # a folder edited to hold other settings is trained afresh, with a warning
    with caplog.at_level("WARNING", logger="workbench"):
        res = experiments.pretrain("omfa", [store], out_dir=res.out_dir, profile=TINY, seed=0)
    assert len(res.history) == 3 and "other settings (train_config differ)" in caplog.text

    # fine-tuning: the ablation study finds 04-style runs with the same settings
    ft = experiments.finetune("omfa", store, run_dir=layout, profile=TINY,
                              pretrained=pre.out_dir, seeds=[0])
    stamp = (ft.out_dir / "done.json").stat().st_mtime_ns
    table = experiments.ablation_study("omfa", [store], store, run_dir=layout, profile=TINY,
                                       seeds=[0], variants=["art_gat", "nograph"])
    assert (ft.out_dir / "done.json").stat().st_mtime_ns == stamp  # not retrained
    pd.testing.assert_frame_equal(table[table["variant"] == "art_gat"].reset_index(drop=True),
                                  ft.results)
    assert len(layout.finished_runs("finetune", "omfa")) == 2
    # more seeds than a finished run holds: the missing seed is trained in the same folder
    more = experiments.finetune("omfa", store, run_dir=layout, profile=TINY,
                                pretrained=pre.out_dir, seeds=[0, 1])
    assert more.out_dir == ft.out_dir and set(more.results["seed"]) == {0, 1}
    assert np.allclose(more.results.query("seed == 0")["accuracy"], ft.results["accuracy"])
