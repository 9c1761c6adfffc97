"""Trainer, optimiser groups and schedules on a tiny MLP and synthetic tensors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import workbench.training.trainer as trainer_mod
from workbench.config import TrainConfig
from workbench.training import (
    Trainer,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    lr_factor,
    make_param_groups,
    no_decay_names,
)

N_CLASSES = 3



# ----------------------------------------------------------------------------- fixtures
class TinyNet(nn.Module):
    """x (B, 2, 4) -> logits (B, 3); dropout so that resuming must restore the RNG."""

    def __init__(self, hidden: int = 16, p: float = 0.2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                     nn.Dropout(p))
        self.encoder2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x, ch_ids=None, rate_id=None, ch_mask=None):
        h = self.encoder(x.flatten(1))  # (B, 8) -> (B, H)
        h = torch.relu(self.encoder2(h))
        return {"logits": self.head(h), "embedding": h}


class DictData(Dataset):
    """Linearly separable 3-class data as batch dicts (contracts: x, y, index)."""

    def __init__(self, n: int = 96, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 2, 4, generator=g)
        w = torch.randn(8, N_CLASSES, generator=torch.Generator().manual_seed(123))
        self.y = (self.x.flatten(1) @ w).argmax(1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


class CEObjective(nn.Module):
    """Cross-entropy with a learnable logit scale (a trainable objective parameter), a step
    counter buffer updated in a hook, and an optional crash at a given step."""

    def __init__(self, crash_at: int | None = None):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.crash_at = crash_at
        self.calls = 0
        self.step_calls: list[tuple[int, int]] = []
        self.epoch_calls: list[tuple[int, dict]] = []
        self.logit_dtypes: set[torch.dtype] = set()

    def forward(self, model, batch):
        if self.training:
            self.calls += 1
            if self.crash_at is not None and self.calls == self.crash_at:
                raise RuntimeError("simulated crash")
        logits = model(batch["x"])["logits"]
        self.logit_dtypes.add(logits.dtype)
        logits = logits.float() * self.log_scale.exp()
        loss = F.cross_entropy(logits, batch["y"])
        acc = (logits.argmax(1) == batch["y"]).float().mean()
        return loss, {"acc": float(acc)}

    def on_step_end(self, model, step, total_steps):
        self.steps_seen += 1
        self.step_calls.append((step, total_steps))

    def on_epoch_end(self, model, epoch, val_logs):
        self.epoch_calls.append((epoch, dict(val_logs)))


def loaders(batch_size: int = 16, n: int = 96):
    train = DataLoader(DictData(n, seed=0), batch_size=batch_size, shuffle=True)
    val = DataLoader(DictData(48, seed=1), batch_size=batch_size, shuffle=False)
    return train, val


def make_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def cfg_for(**kw) -> TrainConfig:
    base = dict(epochs=4, lr=1e-2, weight_decay=1e-2, schedule="constant", grad_clip=1.0,
                progress=False, log_every=2, seed=7, keep_top_k=1)
    base.update(kw)
    return TrainConfig(**base)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- training
def test_loss_falls_and_logs(tmp_path):
    train, val = loaders()
    obj = CEObjective()
    cfg = cfg_for(epochs=6, schedule="cosine", lr=3e-2)
    hist = Trainer(make_model(), obj, cfg, tmp_path).fit(train, val)
    assert len(hist) == 6
    assert hist["loss"].iloc[-1] < 0.5 * hist["loss"].iloc[0]
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    assert hist["val_acc"].iloc[-1] > 0.8
    for col in ("epoch", "step", "loss", "acc", "grad_norm", "val_loss", "val_acc", "lr",
                "seconds", "samples_per_s"):
        assert col in hist.columns, col
    assert hist["step"].tolist() == [6 * (e + 1) for e in range(6)]  # 96 / 16 = 6 steps
    # The cosine lr falls; the history equals history.csv and the JSONL log's epoch events.
    assert hist["lr"].is_monotonic_decreasing
    disk = pd.read_csv(tmp_path / "history.csv")
    pd.testing.assert_frame_equal(disk, hist, check_dtype=False)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["loss"] for e in epochs] == pytest.approx(hist["loss"].tolist())
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(2, 37, 2))  # log_every=2
    # Hooks: every step with the total, every epoch with the validation values.
    assert obj.step_calls == [(s, 36) for s in range(1, 37)]
    assert [e for e, _ in obj.epoch_calls] == list(range(1, 7))
    assert obj.epoch_calls[-1][1]["val_loss"] == pytest.approx(hist["val_loss"].iloc[-1])
    # The objective's trainable parameter was optimised.
    assert obj.log_scale.item() != 0.0


def test_train_means_are_sample_weighted(tmp_path):
    # 40 samples in batches of 16: 16, 16, 8; the epoch mean weights each batch by its size.
    class ConstObjective(nn.Module):
        def forward(self, model, batch):
            out = model(batch["x"])["logits"].sum() * 0.0
            return out + batch["x"].shape[0], {"bs": float(batch["x"].shape[0])}

    train = DataLoader(DictData(40), batch_size=16, shuffle=False)
    hist = Trainer(make_model(), ConstObjective(), cfg_for(epochs=1), tmp_path).fit(train)
    expected = (16 * 16 + 16 * 16 + 8 * 8) / 40
    assert hist["loss"].iloc[0] == pytest.approx(expected)
    assert hist["bs"].iloc[0] == pytest.approx(expected)


def test_resume_after_shorter_run_equals_uninterrupted(tmp_path):
    train, val = loaders()
    full = make_model()
    Trainer(full, CEObjective(), cfg_for(epochs=4), tmp_path / "full").fit(train, val)

    Trainer(make_model(), CEObjective(), cfg_for(epochs=2), tmp_path / "part").fit(train, val)
    resumed = make_model(seed=99)  # different init: everything must come from last.pt
    hist = Trainer(resumed, CEObjective(), cfg_for(epochs=4), tmp_path / "part").fit(train, val)
    assert_same_weights(resumed, full)
    assert hist["epoch"].tolist() == [1, 2, 3, 4]


def test_resume_without_rng_restore_would_differ(tmp_path, monkeypatch):
    # The equality above is not trivial: without restoring RNG states (dropout, shuffling)
    # the resumed run takes another path.
    train, val = loaders()
    full = make_model()
    Trainer(full, CEObjective(), cfg_for(epochs=3), tmp_path / "full").fit(train, val)
    Trainer(make_model(), CEObjective(), cfg_for(epochs=1), tmp_path / "part").fit(train, val)
    monkeypatch.setattr(trainer_mod, "set_rng_state", lambda state: None)
    resumed = make_model()
    Trainer(resumed, CEObjective(), cfg_for(epochs=3), tmp_path / "part").fit(train, val)
    assert not torch.equal(resumed.head.weight, full.head.weight)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine", "onecycle"])
def test_resume_after_crash_equals_uninterrupted(tmp_path, schedule):
    train, val = loaders()
    cfg = cfg_for(epochs=4, schedule=schedule, warmup_steps=3, min_lr_ratio=0.1)
    full, full_obj = make_model(), CEObjective()
    Trainer(full, full_obj, cfg, tmp_path / "full").fit(train, val)

    run = tmp_path / "crash"
    crashing = CEObjective(crash_at=6 * 2 + 4)  # dies in the 4th step of epoch 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(make_model(), crashing, cfg, run).fit(train, val)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2

    resumed, obj = make_model(seed=5), CEObjective()
    hist = Trainer(resumed, obj, cfg, run).fit(train, val)
    assert_same_weights(resumed, full)
    assert torch.equal(obj.log_scale, full_obj.log_scale)
    assert int(obj.steps_seen) == int(full_obj.steps_seen) == 24  # buffer restored, then counted
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    full_hist = pd.read_csv(tmp_path / "full" / "history.csv")
    assert hist["loss"].tolist() == full_hist["loss"].tolist()
    assert hist["lr"].tolist() == pytest.approx(full_hist["lr"].tolist(), rel=1e-12)


def test_completed_run_is_not_retrained(tmp_path):
    train, val = loaders()
    model = make_model()
    Trainer(model, CEObjective(), cfg_for(epochs=2), tmp_path).fit(train, val)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = make_model(seed=3)
    obj = CEObjective()
    hist = Trainer(again, obj, cfg_for(epochs=2), tmp_path).fit(train, val)
    assert obj.calls == 0 and len(hist) == 2
    for k, v in again.state_dict().items():
        assert torch.equal(v, before[k])


def test_early_stopping_stops_and_stays_stopped(tmp_path):
    train, val = loaders()
    cfg = cfg_for(epochs=10, lr=0.0, early_stopping=2)  # lr 0: val_loss never improves
    hist = Trainer(make_model(), CEObjective(), cfg, tmp_path).fit(train, val)
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    events = [json.loads(line)["event"] for line in open(tmp_path / "metrics.jsonl")]
    assert events[-1] == "early_stop"
    obj = CEObjective()  # resuming the stopped run trains nothing
    assert len(Trainer(make_model(), obj, cfg, tmp_path).fit(train, val)) == 3
    assert obj.calls == 0
    # without a validation loader there is nothing to monitor: all epochs run
    hist = Trainer(make_model(), CEObjective(), replace(cfg, epochs=4), tmp_path / "noval").fit(train)
    assert len(hist) == 4


def test_resume_false_starts_afresh(tmp_path):
    train, val = loaders()
    Trainer(make_model(), CEObjective(), cfg_for(epochs=2), tmp_path).fit(train, val)
    obj = CEObjective()
    hist = Trainer(make_model(), obj, cfg_for(epochs=1), tmp_path).fit(train, val, resume=False)
    assert len(hist) == 1 and obj.calls == 6
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_max_steps_per_epoch_and_set_epoch(tmp_path):
    class RecordingSampler(torch.utils.data.Sampler):
        """Shuffles from (seed, epoch) only, like the workbench's samplers."""

        def __init__(self, n):
            self.n, self.epoch, self.epochs_seen = n, 0, []

        def set_epoch(self, epoch):
            self.epoch = epoch
            self.epochs_seen.append(epoch)

        def __iter__(self):
            g = torch.Generator().manual_seed(1000 + self.epoch)
            return iter(torch.randperm(self.n, generator=g).tolist())

        def __len__(self):
            return self.n

    sampler = RecordingSampler(96)
    train = DataLoader(DictData(96), batch_size=8, sampler=sampler)
    obj = CEObjective()
    cfg = cfg_for(epochs=3, max_steps_per_epoch=5)
    hist = Trainer(make_model(), obj, cfg, tmp_path).fit(train)
    assert hist["step"].tolist() == [5, 10, 15]
    assert obj.step_calls[-1] == (15, 15)
    assert sampler.epochs_seen == [0, 1, 2]
    # Resuming a longer run continues with the next epoch number.
    sampler.epochs_seen.clear()
    Trainer(make_model(), CEObjective(), replace(cfg, epochs=4), tmp_path).fit(train)
    assert sampler.epochs_seen == [3]


def test_val_metrics_and_top_k_monitor(tmp_path):
    train, val = loaders()

    def accuracy(model, loader):
        correct = total = 0
        with torch.no_grad():
            for b in loader:
                correct += (model(b["x"])["logits"].argmax(1) == b["y"]).sum().item()
                total += len(b["y"])
        return {"accuracy": correct / total}

    cfg = cfg_for(epochs=5, keep_top_k=2, monitor="val_accuracy", monitor_mode="max")
    tr = Trainer(make_model(), CEObjective(), cfg, tmp_path, val_metrics=accuracy)
    hist = tr.fit(train, val)
    assert "val_accuracy" in hist.columns
    best = hist.sort_values(["val_accuracy", "epoch"], ascending=[False, True]).head(2)
    kept = sorted(p.name for p in (tmp_path / "top").glob("*.pt"))
    assert kept == sorted(f"epoch{e:03d}.pt" for e in best["epoch"])
    assert [p.name for p in tr.top_k.best_paths()] == [f"epoch{e:03d}.pt" for e in best["epoch"]]


def test_unknown_monitor_is_an_error(tmp_path):
    train, val = loaders()
    with pytest.raises(KeyError, match="val_acuracy"):
        Trainer(make_model(), CEObjective(), cfg_for(epochs=1, monitor="val_acuracy"),
                tmp_path).fit(train, val)


def test_non_finite_loss_raises(tmp_path):
    class NaNObjective(nn.Module):
        def forward(self, model, batch):
            return model(batch["x"])["logits"].sum() * float("nan"), {}

    train, _ = loaders()
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        Trainer(make_model(), NaNObjective(), cfg_for(epochs=1), tmp_path).fit(train)


def test_bf16_autocast_on_cpu_only_when_asked(tmp_path):
    train, _ = loaders()
    obj = CEObjective()
    tr = Trainer(make_model(), obj, cfg_for(epochs=1, amp="auto"), tmp_path / "a", device="cpu")
    tr.fit(train)
    assert obj.logit_dtypes == {torch.float32} and tr.amp_dtype is None
    obj = CEObjective()
    hist = Trainer(make_model(), obj, cfg_for(epochs=3, amp="bf16"), tmp_path / "b",
                   device="cpu").fit(train)
    assert obj.logit_dtypes == {torch.bfloat16}
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training(tmp_path):
    train, val = loaders()
    obj = CEObjective()
    tr = Trainer(make_model(), obj, cfg_for(epochs=4), tmp_path, device="cuda")
    hist = tr.fit(train, val)
    assert obj.logit_dtypes == {torch.bfloat16}
    assert next(tr.model.parameters()).is_cuda
    assert hist["loss"].iloc[-1] < 0.7 * hist["loss"].iloc[0]
    ckpt = load_checkpoint(tmp_path / "last.pt")  # CPU map_location by default
    assert ckpt["model"]["head.weight"].device.type == "cpu"


# ----------------------------------------------------------------------------- optimiser
def test_make_param_groups_prefixes_and_no_decay():
    model = TinyNet()
    model.emb = nn.Embedding(4, 8)
    model.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
    model.encoder2.bias.requires_grad_(False)  # frozen: left out
    groups = make_param_groups(model, {"encoder": 1e-4, "head.": 1e-3}, default_lr=5e-4,
                               weight_decay=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    expect = {  # name: (lr, weight decay)
        "encoder.0.weight": (1e-4, 0.1), "encoder.0.bias": (1e-4, 0.0),
        "encoder.1.weight": (1e-4, 0.0), "encoder.1.bias": (1e-4, 0.0),  # LayerNorm
        "encoder2.weight": (5e-4, 0.1),  # "encoder" must not match "encoder2"
        "head.weight": (1e-3, 0.1), "head.bias": (1e-3, 0.0),
        "emb.weight": (5e-4, 0.0), "pos_embed": (5e-4, 0.0),
    }
    for name, (lr, wd) in expect.items():
        g = by_param[id(names[name])]
        assert (g["lr"], g["weight_decay"]) == (lr, wd), name
    assert id(names["encoder2.bias"]) not in by_param
    assert sum(len(g["params"]) for g in groups) == len(expect)
    assert "pos_embed" in no_decay_names(model)
    with pytest.raises(ValueError, match="encoderr"):
        make_param_groups(model, {"encoderr": 1e-4})


def test_differential_lrs_are_used_by_the_trainer(tmp_path):
    # Adam's first update is lr * g / (|g| + eps) ~ lr per element: each group moves by its lr.
    model = make_model()
    model.encoder[3].p = 0.0
    before = {k: v.clone() for k, v in model.named_parameters()}
    groups = make_param_groups(model, {"encoder": 1e-4, "head": 1e-2}, default_lr=1e-3,
                               weight_decay=0.0)
    cfg = cfg_for(epochs=1, max_steps_per_epoch=1, grad_clip=None, weight_decay=0.0)
    train = DataLoader(DictData(16), batch_size=16)
    tr = Trainer(model, CEObjective(), cfg, tmp_path, param_groups=groups)
    tr.fit(train)
    lrs = sorted({g["lr"] for g in tr.optimizer.param_groups})
    assert lrs == [1e-4, 1e-3, 1e-2]
    for name, p in model.named_parameters():
        step = (p.detach() - before[name]).abs().max().item()
        lr = 1e-4 if name.startswith("encoder.") else 1e-2 if name.startswith("head") else 1e-3
        assert step == pytest.approx(lr, rel=1e-3), name


def test_callable_param_groups_and_frozen_objective(tmp_path):
    model = make_model()
    obj = CEObjective()
    cfg = cfg_for(epochs=1, max_steps_per_epoch=1, lr=1e-3)
    tr = Trainer(model, obj, cfg, tmp_path,
                 param_groups=lambda m: [{"params": m.head.parameters(), "lr": 0.5}])
    tr.fit(DataLoader(DictData(16), batch_size=16))
    groups = tr.optimizer.param_groups
    assert [len(g["params"]) for g in groups] == [2, 1]  # head + objective's log_scale
    assert groups[0]["lr"] == 0.5 and groups[1]["lr"] == 1e-3 and groups[1]["name"] == "extra/no_decay"


# ----------------------------------------------------------------------------- schedules
def lrs_of(cfg: TrainConfig, total: int, groups_lr=None) -> list[list[float]]:
    groups_lr = groups_lr or (cfg.lr,)
    params = [nn.Parameter(torch.zeros(2)) for _ in groups_lr]
    opt = build_optimizer(nn.Linear(1, 1), cfg, [{"params": [p], "lr": lr}
                                                 for p, lr in zip(params, groups_lr)])
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_constant_schedule():
    assert lrs_of(TrainConfig(lr=1.0, schedule="constant"), 10) == [[1.0]] * 10


def test_cosine_schedule_hand_values():
    lr = [r[0] for r in lrs_of(TrainConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1), 10)]
    # 0.1 + 0.9 * (1 + cos(pi * s / 10)) / 2
    assert lr[0] == pytest.approx(1.0)
    assert lr[5] == pytest.approx(0.55)
    assert lr[9] == pytest.approx(0.1 + 0.45 * (1 - 0.9510565163))


def test_warmup_cosine_schedule_hand_values():
    lr = [r[0] for r in lrs_of(TrainConfig(lr=2.0, schedule="warmup_cosine", warmup_steps=4), 10)]
    # warm-up (s + 1) / 4, then cosine over the 6 remaining steps
    assert lr[:5] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])
    assert lr[7] == pytest.approx(1.0)  # p = 3/6
    assert lr[9] == pytest.approx(2.0 * 0.5 * (1 - 0.8660254038))  # p = 5/6
    # warmup_frac and the STELAR rule max(warmup_steps, frac * T)
    lr = [r[0] for r in lrs_of(TrainConfig(lr=1.0, schedule="warmup_cosine", warmup_frac=0.2), 10)]
    assert lr[:3] == pytest.approx([0.5, 1.0, 1.0])
    lr = [r[0] for r in lrs_of(TrainConfig(lr=1.0, schedule="warmup_cosine", warmup_steps=3,
                                           warmup_frac=0.5), 10)]
    assert lr[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    with pytest.raises(ValueError, match="warmup"):
        lrs_of(TrainConfig(schedule="warmup_cosine"), 10)
    assert lr_factor(0, 10, "constant", warmup_steps=2) == 0.5


def test_onecycle_schedule_hand_values():
    cfg = TrainConfig(lr=0.1, max_lr=1.0, schedule="onecycle", warmup_frac=0.3)
    out = lrs_of(cfg, 10, groups_lr=(0.1, 0.01))
    lr = [r[0] for r in out]
    start, low = 1.0 / 25, 1.0 / 25 / 1e4  # div_factor 25, final_div_factor 1e4
    assert lr[0] == pytest.approx(start)
    assert lr[1] == pytest.approx((start + 1.0) / 2)  # half-way up phase 1 (ends at step 2)
    assert lr[2] == pytest.approx(1.0)
    assert lr[5] == pytest.approx(low + (1.0 - low) * (1 + math.cos(math.pi * 3 / 7)) / 2)
    assert lr[9] == pytest.approx(low)
    # the second group keeps its 1:10 ratio (peak 0.1)
    assert [r[1] for r in out] == pytest.approx([v / 10 for v in lr])


# ----------------------------------------------------------------------------- torchrun
DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    sys.path.insert(0, {root!r})
    from tests.test_trainer import DictData, CEObjective, make_model, cfg_for
    from workbench.training import Trainer, cleanup_distributed, init_distributed
    init_distributed("cpu")  # before the DistributedSampler, which asks for the rank
    data = DictData(48)
    sampler = DistributedSampler(data, shuffle=False)
    loader = DataLoader(data, batch_size=4, sampler=sampler)
    model = make_model()
    model.encoder[3].p = 0.0  # ranks draw other dropout masks than one process would
    tr = Trainer(model, CEObjective(), cfg_for(epochs=2, keep_top_k=0), {out!r}, device="cpu")
    tr.fit(loader)
    if int(os.environ["RANK"]) == 0:
        torch.save(model.state_dict(), {weights!r})
    cleanup_distributed()
""")


@pytest.mark.slow
def test_torchrun_ddp_matches_single_process(tmp_path):
    # Two ranks with 4 samples each (DistributedSampler: ranks take even/odd indices) average
    # their gradients: the same update as one process on the 8 samples.
    root = str(Path(__file__).resolve().parents[1])
    weights = tmp_path / "ddp.pt"
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=root, out=str(tmp_path / "ddp"),
                                        weights=str(weights)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", str(script)], capture_output=True, text=True,
                         env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]

    single = make_model()
    single.encoder[3].p = 0.0
    loader = DataLoader(DictData(48), batch_size=8, shuffle=False)
    Trainer(single, CEObjective(), cfg_for(epochs=2, keep_top_k=0), tmp_path / "one",
            device="cpu").fit(loader)
    ddp = torch.load(weights, weights_only=True)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
