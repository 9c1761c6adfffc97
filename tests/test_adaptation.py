"""Adaptation modes: frozen encoders, LoRA adapters (peft) and multi-task fine-tuning."""

import copy

import numpy as np
import pytest
import torch

from workbench import experiments
from workbench.config import get_profile
from workbench.evaluation.protocols import Protocol
from workbench.methods import get_method
from workbench.models import create_model
from workbench.training.adaptation import apply_lora, freeze, merge_lora, trainable_count

TINY = get_profile("smoke", pretrain_epochs=1, finetune_epochs=2, max_steps_per_epoch=3,
                   synthetic_subjects=3, synthetic_sessions=1, synthetic_trials=4,
                   synthetic_trial_s=4.0, pretrain_batch_size=16, finetune_batch_size=8)


def _omfa():
    torch.manual_seed(0)
    m = get_method("omfa")
    model = create_model("omfa_classifier", "tiny", n_outputs=2, n_channels=8)
    return m, model


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 256, generator=g), torch.arange(4).expand(3, 4).clone()


def test_lora_trains_only_adapters_and_new_layers():
    m, model = _omfa()
    enc = m.encoder_parameter_names(model)
    enc_size = sum(p.numel() for n, p in model.named_parameters() if n in set(enc))
    new_size = sum(p.numel() for n, p in model.named_parameters() if n not in set(enc))
    targets = apply_lora(model, enc, r=2)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert targets and lora
    # each adapted Linear(in, out) gets r * (in + out) adapter weights
    expected = sum(2 * (model.get_submodule(t).in_features + model.get_submodule(t).out_features)
                   for t in targets)
    assert sum(p.numel() for p in lora.values()) == expected
    assert trainable_count(model) == expected + new_size
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == enc_size


def test_merged_lora_model_equals_the_adapted_one():
    m, model = _omfa()
    apply_lora(model, m.encoder_parameter_names(model), r=2)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero: make the adapters do something
            torch.nn.init.normal_(p, std=0.5)
    x, ids = _inputs()
    model.eval()
    with torch.no_grad():
        adapted = model(x, ch_ids=ids)["logits"]
        merged = merge_lora(copy.deepcopy(model))
        out = merged(x, ch_ids=ids)["logits"]
        plain = _omfa()[1].eval()(x, ch_ids=ids)["logits"]
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(out, adapted, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapters changed the function


def test_freeze_counts():
    m, model = _omfa()
    enc = m.encoder_parameter_names(model)
    assert freeze(model, enc) == len(enc)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in set(enc))


@pytest.mark.slow
def test_multitask_one_encoder_two_heads(tmp_path):
    m = get_method("omfa")
    cache = tmp_path / "cache"
    deap = m.load_store("syn_deap", profile=TINY, cache_dir=cache)  # 32 channels, 2 classes
    seed = m.load_store("syn_seed", profile=TINY, cache_dir=cache)  # 62 channels, 3 classes
    pre = experiments.pretrain(m, [deap, seed], run_dir=tmp_path, profile=TINY, seed=0)
    res = experiments.finetune_multitask(m, [deap, seed], run_dir=tmp_path, profile=TINY,
                                         pretrained=pre.out_dir, seeds=[0],
                                         protocol=Protocol("subject_kfold", folds=3,
                                                           max_folds=1, val_size=0.5))
    r = res.results
    assert list(r["dataset"]) == ["syn_deap", "syn_seed"] * (len(r) // 2)
    assert (r["tasks"] == "syn_deap+syn_seed").all()
    p = res.predictions
    assert p.loc[p["dataset"] == "syn_seed", ["p0", "p1", "p2"]].notna().all().all()
    assert p.loc[p["dataset"] == "syn_deap", "p2"].isna().all()  # two classes, two columns
    ckpt = torch.load(res.out_dir / "seed0" / "fold0" / "last.pt", weights_only=True)
    heads = {k: v.shape for k, v in ckpt["model"].items() if k.startswith("heads.")}
    assert heads["heads.0.weight"][0] == 2 and heads["heads.1.weight"][0] == 3
    assert sum(k.startswith("backbone.encoder.") for k in ckpt["model"]) > 0
    # a batch never mixes tasks
    from workbench.experiments.multitask import MultiTaskObjective
    batch = {"x": torch.zeros(2, 4, 256), "y": torch.zeros(2, dtype=torch.int64),
             "task": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="one task"):
        MultiTaskObjective()(None, batch)
    assert np.isfinite(r["balanced_accuracy"]).all()
