"""The closing sentences of the notebooks follow the recorded numbers (the verdict flips when the
numbers do), and RunWatch tells a found run from one trained now."""

from __future__ import annotations

import os
import time

import pytest

from workbench.report.narrative import RunWatch, map_caption, outcome, register_outcome
from workbench.runs import RunLayout


def test_data_outcome_says_whether_each_map_is_above_chance():
    m = {"n_datasets": 3, "ucs_size": 62, "intersection_size": 14,
         "class_difference_p_syn_deap": 0.001, "class_difference_channels_syn_deap": 7,
         "max_abs_class_difference_syn_deap": 0.21,
         "skewness_difference_p_syn_deap": 0.4, "skewness_difference_channels_syn_deap": 0}
    text = outcome("00_data", m)
    assert "union, the Unified Channel Schema, has 62" in text and "drop 48 channels" in text
    assert "band-power class difference (largest 0.21 log10 units) is above chance" in text
    assert "max over channels: p = 0.001; 7 channels significant" in text
    assert "skewness) difference of one subject is not distinguishable from chance (p = 0.4" in text
    assert "read it as noise" in text
    m["skewness_difference_p_syn_deap"] = 0.002
    assert "both maps show it above chance" in outcome("00_data", m)


def test_baseline_outcome_uses_chance_and_the_subject_gap():
    m = {"within_subject_accuracy_syn_deap": 0.81, "cross_subject_accuracy_syn_deap": 0.61,
         "n_classes_syn_deap": 2}
    text = outcome("02_baselines", m)
    assert "within-subject is above chance" in text and "chance 0.5" in text
    assert "loses 20 accuracy points" in text and "partly its own" in text
    m["within_subject_accuracy_syn_deap"] = 0.52
    text = outcome("02_baselines", m)
    assert "about the same as chance" in text and "no loss across subjects" in text


@pytest.mark.parametrize("acc,verdict", [(0.8, "above it"), (0.6, "below it"),
                                         (0.71, "about the same as it")])
def test_finetune_outcome_compares_with_baseline_and_scratch(acc, verdict):
    m = {"method": "omfa", "variant": "art_gat", "mode": "full", "dataset": "syn_deap",
         "protocol": "within_subject", "n_folds": 2, "n_classes": 2, "accuracy": acc,
         "baseline_accuracy": 0.7, "scratch_accuracy": 0.65}
    text = outcome("04_finetune__omfa", m)
    assert text.startswith("**Outcome (04_finetune__omfa)**")
    assert f"the model is {verdict}" in text
    worth = "pre-training is worth" if acc > 0.7 else "pre-training is not clearly worth"
    assert worth in text and "within the noise" in text


def test_connectivity_outcome_refuses_a_uniform_map():
    m = {"subject": "01", "n_test_windows": 40, "kl_from_uniform": 1e-6, "attention_uniform": True,
         "max_min_ratio": 1.006, "class_difference_p": 0.43}
    text = outcome("07_gat_connectivity__omfa", m)
    assert "indistinguishable from uniform" in text and "does not differ beyond chance" in text
    assert "not a finding" in text
    # the smoke run's case: not exactly uniform, but nearly, with a class difference
    m.update(attention_uniform=False, kl_from_uniform=2.3e-5, max_min_ratio=1.02,
             class_difference_p=0.025)
    text = outcome("07_gat_connectivity__omfa", m)
    assert "close to uniform (the largest mean weight is 1.02x the smallest" in text
    assert "real but small" in text and "weak tendencies" in text
    m.update(kl_from_uniform=0.2, max_min_ratio=4.0, class_difference_p=0.002)
    text = outcome("07_gat_connectivity__omfa", m)
    assert "far from uniform" in text and "differs beyond chance (permutation test over " \
        "windows: p = 0.002)" in text and "reflect a real difference" in text


def test_other_outcomes_follow_their_numbers():
    pre = outcome("03_pretrain", {"method": "omfa", "loss_first": 2.0, "loss_last": 1.0})
    assert "-50 %" in pre and "being learned" in pre
    assert "did not fall" in outcome("03_pretrain", {"loss_first": 1.0, "loss_last": 1.2})
    abl = outcome("05_ablations", {"default_variant": "art_gat", "accuracy_art_gat": 0.7,
                                   "accuracy_scratch": 0.8})
    assert "scratch 0.8, art_gat 0.7" in abl and "ranks 2 of 2" in abl and "does not hold" in abl
    one = outcome("05_ablations", {"default_variant": "art_gat", "accuracy_art_gat": 0.7})
    assert "ranks" not in one  # one variant says nothing about the paper's claim
    emb = outcome("06_embeddings", {"ari_pre-trained": 0.3, "ari_scratch": 0.0})
    assert "pre-training made the classes more separable" in emb
    emb = outcome("06_embeddings", {"ari_pre-trained": 0.01, "ari_scratch": -0.01})
    assert "neither encoder separates the classes better than chance" in emb
    eff = outcome("08_efficiency", {"length_ratio_eegm2": 64.0, "memory_ratio_eegm2": 60.0,
                                    "length_ratio_s5": 64.0, "memory_ratio_s5": 900.0})
    assert "eegm2: over a 64x longer input, peak memory grew 60x (at most linearly)" in eff
    assert "s5: over a 64x longer input, peak memory grew 900x (faster than linearly)" in eff
    rec = outcome("09_reconstruction", {"mean_corr": 0.9, "ari_raw": 0.1, "ari_learned": 0.3})
    assert "reproduces the signal closely" in rec and "better than the raw statistics" in rec
    rec = outcome("09_reconstruction", {"mean_corr": 0.6, "ari_raw": -0.002, "ari_learned": 0.0})
    assert "reproduces part of the signal" in rec and "neither separates the classes" in rec
    prep = outcome("01_preprocess", {"n_recordings": 2, "n_failures": 0, "n_components": 20,
                                     "n_excluded": 5, "recordings_with_blink_excluded": 2,
                                     "cached_rerun_all_from_cache": True})
    assert "excluded 5 (25 %)" in prep and "entirely from the cache" in prep


def test_unknown_notebooks_list_their_metrics_and_can_register():
    assert "Recorded: a = 1, b = 0.5." in outcome("42_new", {"a": 1, "b": 0.5})
    register_outcome("43_new")(lambda m: [f"x is {m['x']}"])
    assert "- x is 3" in outcome("43_new__tag", {"x": 3})


def test_run_watch_tells_found_from_trained(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    layout = RunLayout("", "smoke")
    old = layout.run("pretrain", "omfa", "a", {"x": 1})
    old.path.mkdir(parents=True)
    old.mark_finished()
    watch = RunWatch(layout)
    new = layout.run("finetune", "omfa", "b", {"x": 2})
    new.path.mkdir(parents=True)
    new.mark_finished()
    found = watch.note(old.path, "pre-training", "03_pretrain")
    assert found.startswith("Found the finished pre-training in runs/smoke/omfa/pretrain/a-")
    assert "not retrained" in found
    trained = watch.note(new.path, "fine-tuning", "04_finetune")
    assert trained.startswith("No finished fine-tuning with these settings was under runs/smoke")
    assert "04_finetune makes it" in trained
    assert watch.report("05_ablations") == (
        "No finished run with these settings was under runs/smoke for 1 of them; trained now: "
        f"omfa/finetune/{new.path.name} (05_ablations or `workbench reproduce --profile smoke` "
        "make them).")
    assert RunWatch(layout).report("x").startswith("Every run this notebook needed was already")
    # a finished run marked again (e.g. more seeds) was trained now too
    marker = old.path / "done.json"
    os.utime(marker, ns=(time.time_ns(), marker.stat().st_mtime_ns + 10**9))
    assert watch.note(old.path, "pre-training", "03_pretrain").startswith("No finished")


def test_map_caption_states_the_verdict():
    sig = {"p_value": 0.0004, "significant": [True, False, True], "n_significant": 2}
    assert map_caption(sig) == ("above chance: p < 0.001 (max over channels, trials permuted); "
                                "2/3 channels (dots)")
    sig.update(p_value=0.31, significant=[False] * 3, n_significant=0)
    assert map_caption(sig, "windows").startswith("NOT above chance: p = 0.31 (max over channels, "
                                                  "windows permuted); 0/3")
