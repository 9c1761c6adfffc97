"""Checkpoints: atomic writes, weights-only loads, the top-k keeper, rebuilding and ensembling."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import workbench.models.registry as registry
from workbench.config import TrainConfig
from workbench.training import (
    CheckpointError,
    TopKCheckpoints,
    Trainer,
    build_model_from_checkpoint,
    ensemble_predict_proba,
    load_checkpoint,
    predict_proba,
    remove_stale_temp_files,
    save_checkpoint,
)


class CkptMLP(nn.Module):
    def __init__(self, hidden: int = 8, n_outputs: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))

    def forward(self, x, ch_ids=None, rate_id=None, ch_mask=None):
        return {"logits": self.body(x.flatten(1))}  # (B, 2, 4) -> (B, 8) -> (B, K)


class Unsafe:
    """A class a weights-only load must refuse."""

    def __init__(self):
        self.v = 1


class DictData(Dataset):
    def __init__(self, n: int = 40, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 2, 4, generator=g)
        self.y = (self.x.flatten(1)[:, :3]).argmax(1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(100 + i)}


class CE(nn.Module):
    def forward(self, model, batch):
        return F.cross_entropy(model(batch["x"])["logits"], batch["y"]), {}


def cfg_for(**kw) -> TrainConfig:
    base = dict(epochs=3, lr=1e-2, schedule="cosine", progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def tiny_run(out: Path, epochs: int = 3, keep_top_k: int = 1) -> tuple[CkptMLP, Trainer]:
    torch.manual_seed(0)
    model = CkptMLP(hidden=8, n_outputs=3)
    tr = Trainer(model, CE(), cfg_for(epochs=epochs, keep_top_k=keep_top_k), out,
                 model_spec={"name": "_test_checkpoint_mlp", "preset": "tiny",
                             "overrides": {"n_outputs": 3}})
    loader = DataLoader(DictData(), batch_size=8, shuffle=True)
    tr.fit(loader, DataLoader(DictData(16, seed=1), batch_size=8))
    return model, tr


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


# ----------------------------------------------------------------------------- save / load
def test_trainer_checkpoint_loads_weights_only(tmp_path):
    model, tr = tiny_run(tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)  # the strict loader itself
    assert ckpt["epoch"] == 3 and ckpt["step"] == 15
    assert ckpt["train_config"] == asdict(tr.cfg)
    assert ckpt["model_spec"] == {"name": "_test_checkpoint_mlp", "preset": "tiny",
                                  "overrides": {"n_outputs": 3}}
    assert [r["epoch"] for r in ckpt["history"]] == [1, 2, 3]
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v)


def test_save_killed_midway_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    real_save = torch.save

    def partial_save(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        with open(f, "r+b") as fh:  # leave half a file behind, then die
            fh.truncate(os.path.getsize(f) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert temp_files(tmp_path) == []

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 3})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert temp_files(tmp_path) == []


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {root!r})
    from workbench.training import save_checkpoint
    save_checkpoint({path!r}, {{"epoch": 1, "model": {{"w": torch.ones(1000)}}}})
    real_save = torch.save
    def save_then_die(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 3)
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no cleanup
    torch.save = save_then_die
    save_checkpoint({path!r}, {{"epoch": 2, "model": {{"w": torch.zeros(1000)}}}})
""")


@pytest.mark.slow
def test_process_killed_mid_write(tmp_path):
    path = tmp_path / "last.pt"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]),
                                         path=str(path)))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == -9, res.stderr[-2000:]
    assert load_checkpoint(path)["epoch"] == 1
    stale = temp_files(tmp_path)
    assert len(stale) == 1  # SIGKILL leaves the temp file; the next run removes it
    with pytest.raises(CheckpointError):
        load_checkpoint(stale[0])
    assert remove_stale_temp_files(tmp_path) == stale
    assert temp_files(tmp_path) == [] and path.is_file()


def test_trainer_removes_stale_temp_files(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    tiny_run(tmp_path, epochs=1)
    assert temp_files(tmp_path) == []


def test_load_refuses_code_and_names_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Unsafe()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*Unsafe.*arbitrary code"):
        load_checkpoint(path)


def test_load_corrupt_and_truncated_names_the_file(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.randn(500)}})
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("trunc.pt", "junk.pt", "empty.pt"):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="lacks"):  # a top-k file cannot resume a run
        torch.manual_seed(0)
        save_checkpoint(tmp_path / "run" / "last.pt", {"kind": "top", "model": {}})
        Trainer(CkptMLP(), CE(), cfg_for(), tmp_path / "run").fit(
            DataLoader(DictData(), batch_size=8))


# ----------------------------------------------------------------------------- top-k
def test_top_k_keeps_exactly_the_best(tmp_path):
    keeper = TopKCheckpoints(3, "val_loss", "min", tmp_path)
    values = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, math.nan]
    for epoch, v in enumerate(values, start=1):
        keeper.update(epoch, v, lambda e=epoch: {"model": {"e": torch.tensor(e)}})
    assert [p.name for p in keeper.best_paths()] == ["epoch004.pt", "epoch005.pt", "epoch002.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == sorted(
        p.name for p in keeper.best_paths())
    assert keeper.best() == (1.0, 4)
    assert int(load_checkpoint(keeper.best_paths()[0])["model"]["e"]) == 4

    up = TopKCheckpoints(2, "val_acc", "max", tmp_path / "max")
    for epoch, v in enumerate([0.5, 0.9, 0.9, 0.7, 0.95], start=1):
        up.update(epoch, v, {"model": {}})
    assert [e for _, e in up.entries] == [5, 2]  # tie 0.9: the earlier epoch stays
    assert sorted(p.name for p in (tmp_path / "max").glob("*.pt")) == ["epoch002.pt",
                                                                      "epoch005.pt"]
    restored = TopKCheckpoints(2, "val_acc", "max", tmp_path / "max")
    restored.load_state_dict(up.state_dict())
    assert restored.entries == up.entries
    assert not TopKCheckpoints(0, folder=tmp_path).update(1, 0.1, {"model": {}})


def test_trainer_top_k_matches_history(tmp_path):
    _, tr = tiny_run(tmp_path, epochs=4, keep_top_k=2)
    hist = tr.history
    best = sorted(hist, key=lambda r: (r["val_loss"], r["epoch"]))[:2]
    assert [p.name for p in tr.top_k.best_paths()] == [f"epoch{r['epoch']:03d}.pt" for r in best]
    assert sorted(p.name for p in (tmp_path / "top").glob("*.pt")) == sorted(
        f"epoch{r['epoch']:03d}.pt" for r in best)
    top = load_checkpoint(tr.top_k.best_paths()[0])
    assert top["kind"] == "top" and top["metrics"]["val_loss"] == best[0]["val_loss"]


# ----------------------------------------------------------------------------- rebuild, ensemble
@pytest.fixture
def only_test_models(monkeypatch):
    # Register the test model for this test only (tests parametrised over every registered
    # model must not see it) and keep this file independent of the other model files, which
    # the registry would import.
    monkeypatch.setattr(registry, "_ensure_loaded", lambda: None)
    monkeypatch.setitem(registry._MODELS, "_test_checkpoint_mlp", CkptMLP)
    monkeypatch.setitem(registry._PRESETS, "_test_checkpoint_mlp",
                        {"tiny": {"hidden": 8}, "paper": {"hidden": 64}})


def test_build_model_from_checkpoint(tmp_path, only_test_models):
    model, _ = tiny_run(tmp_path)
    rebuilt = build_model_from_checkpoint(tmp_path / "last.pt")
    assert isinstance(rebuilt, CkptMLP) and not rebuilt.training
    x = torch.randn(5, 2, 4)
    model.eval()
    assert torch.equal(rebuilt(x)["logits"], model(x)["logits"])
    save_checkpoint(tmp_path / "nospec.pt", {"model": model.state_dict(), "model_spec": None})
    with pytest.raises(CheckpointError, match="nospec.pt.*model_spec"):
        build_model_from_checkpoint(tmp_path / "nospec.pt")


def test_predict_proba_matches_softmax():
    torch.manual_seed(0)
    model = CkptMLP()
    data = DictData(20)
    probs, y, index = predict_proba(model, DataLoader(data, batch_size=6), "cpu")
    with torch.no_grad():
        ref = torch.softmax(model(data.x)["logits"], -1).double().numpy()
    np.testing.assert_allclose(probs, ref, rtol=1e-6)
    np.testing.assert_array_equal(y, data.y.numpy())
    np.testing.assert_array_equal(index, np.arange(100, 120))
    assert model.training  # mode restored


def test_ensemble_of_identical_checkpoints_is_the_single_model(tmp_path, only_test_models):
    model, _ = tiny_run(tmp_path)
    loader = DataLoader(DictData(20, seed=3), batch_size=8)
    single, y, idx = predict_proba(model, loader, "cpu")
    paths = [tmp_path / "last.pt"] * 3
    ens, y2, idx2 = ensemble_predict_proba(model, paths, loader, "cpu")
    np.testing.assert_allclose(ens, single, rtol=1e-12)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(idx2, idx)
    ens_rebuilt, _, _ = ensemble_predict_proba(None, paths, loader, "cpu")  # from model_spec
    np.testing.assert_allclose(ens_rebuilt, single, rtol=1e-12)


def test_ensemble_averages_probabilities(tmp_path):
    torch.manual_seed(0)
    a, b = CkptMLP(), CkptMLP()
    save_checkpoint(tmp_path / "a.pt", {"model": a.state_dict()})
    save_checkpoint(tmp_path / "b.pt", {"model": b.state_dict()})
    loader = DataLoader(DictData(20), batch_size=8)
    pa, _, _ = predict_proba(a, loader, "cpu")
    pb, _, _ = predict_proba(b, loader, "cpu")
    holder = CkptMLP()
    own = {k: v.clone() for k, v in holder.state_dict().items()}
    ens, _, _ = ensemble_predict_proba(holder, [tmp_path / "a.pt", tmp_path / "b.pt"], loader,
                                       "cpu")
    np.testing.assert_allclose(ens, (pa + pb) / 2, rtol=1e-12)
    assert not np.allclose(pa, pb)
    for k, v in holder.state_dict().items():  # the model's own weights are back
        assert torch.equal(v, own[k])
    with pytest.raises(ValueError, match="order"):
        ensemble_predict_proba(holder, [tmp_path / "a.pt", tmp_path / "b.pt"],
                               DataLoader(DictData(20), batch_size=8, shuffle=True), "cpu")
