"""The GPU check script (``benchmarks/gpu_check.py``) and the sync-free training loop it times.

The script's helpers are checked against hand values; the Trainer's host reads of tensor values
are counted by patching ``torch.Tensor``'s reading methods; and (slow) the whole script runs
with ``--device cpu --quick`` in a subprocess that cannot import the data stack, and the JSON it
writes is checked.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks import gpu_check
from tests.test_import_isolation import blocked_env
from workbench.config import TrainConfig
from workbench.models import list_models
from workbench.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
WORKBENCH_DIR = str(ROOT / "workbench")


# ----------------------------------------------------------------------------- helpers
def test_bf16_peak_lookup_prefers_the_specific_name():
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.bf16_peak_tflops("NVIDIA L40S") == 362.0
    assert gpu_check.bf16_peak_tflops("NVIDIA L4") == 121.0
    assert gpu_check.bf16_peak_tflops("Tesla T4") is None  # no bf16 tensor cores


def test_missing_signal_kwargs_fills_only_required_signal_arguments():
    def ctor(n_outputs, n_chans, depth, width=8, *, sfreq, **kw):
        return None

    assert gpu_check.missing_signal_kwargs(ctor, {"n_chans": 19}, 300) == {
        "n_outputs": 4, "sfreq": 128.0}  # depth is unknown: left for the error to name

    class Model(nn.Module):
        def __init__(self, n_times, n_chans=16):
            super().__init__()

    assert gpu_check.missing_signal_kwargs(Model, {}, 300) == {"n_times": 300}
    assert gpu_check.missing_signal_kwargs(lambda **kw: None, {}, 300) == {}


class SingleChannel(nn.Module):
    """Accepts (N, T) only, like a univariate encoder."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 3)

    def forward(self, x):
        if x.dim() != 2:
            raise ValueError(f"expected (N, T), got {tuple(x.shape)}")
        return {"embedding": self.lin(x), "ids": torch.zeros(len(x), dtype=torch.long)}


def test_example_input_falls_back_to_the_shapes_a_model_accepts():
    x = gpu_check.example_input(SingleChannel(), 16, 2, 32, torch.device("cpu"))
    assert tuple(x.shape) == (2, 32)
    lin = nn.Linear(32, 3)
    x = gpu_check.example_input(lambda x: lin(x), 16, 2, 32, torch.device("cpu"))
    assert tuple(x.shape) == (2, 16, 32)  # (B, C, T) first when it is accepted


def test_loss_main_output_and_relative_error_hand_values():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([[3.0]], requires_grad=True)
    out = {"embedding": a, "attention": [b], "ids": torch.tensor([1, 2]),
           "frozen": torch.ones(3)}
    loss = gpu_check.scalar_loss(out)
    assert loss.item() == pytest.approx((1 + 4) / 2 + 9)  # frozen / integer outputs left out
    assert gpu_check.main_output(out) is a
    assert gpu_check.main_output({"tokens": b, "logits": a}) is a  # logits answer first
    assert gpu_check.rel_err(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 4.0])) == \
        pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="requires a gradient"):
        gpu_check.scalar_loss({"x": torch.ones(2)})


def test_step_flops_counts_forward_and_backward_matrix_products():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    x = torch.randn(2, 8)
    # forward 2 * (2 x 8 x 4); backward: grad of the weight (same size; no input grad needed)
    assert gpu_check.step_flops(lin, x, amp=False) == 2 * 2 * 8 * 4 * 2
    assert lin.weight.grad is None  # the count leaves no gradients behind


def test_kernel_rows_compare_against_a_stand_in_for_the_fused_kernels():
    # On the CPU the references stand in for mamba_ssm's kernels (same signatures): the
    # comparison, gradients and tolerances are exercised without CUDA.
    from workbench.models.layers.ssm import selective_scan_ref, ssd_naive

    small = dict(length=40, repeats=1, width=16, headdim=8, state=4, chunk=16)
    fused = {"ssd": ssd_naive, "selective_scan": selective_scan_ref}
    rows = gpu_check.kernel_rows(torch.device("cpu"), fused, **small)
    assert [(r["op"], r["dtype"]) for r in rows] == [
        ("ssd", "float32"), ("selective_scan", "float32"),
        ("ssd", "bfloat16"), ("selective_scan", "bfloat16")]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["ms_torch"] > 0 and r["ms_fused"] > 0
        if r["dtype"] == "float32":
            assert r["rel_err_out"] < 1e-5 and r["rel_err_grad_max"] < 1e-4, r
    off = {"ssd": lambda *a, **k: 1.01 * ssd_naive(*a, **k),  # a kernel 1 % off is flagged
           "selective_scan": selective_scan_ref}
    rows = gpu_check.kernel_rows(torch.device("cpu"), off, **small)
    assert [r["status"] for r in rows if r["dtype"] == "float32"] == ["check", "ok"]


# ----------------------------------------------------------------------------- host syncs
READERS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__",
           "__format__")


@contextlib.contextmanager
def count_host_reads() -> Iterator[list[str]]:
    """Record every read of a tensor's value made from workbench code (each one would wait
    for the GPU on a CUDA device). Patches ``torch.Tensor``'s reading methods."""
    reads: list[str] = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in READERS}

    def wrap(name, orig):
        def reader(self, *args, **kwargs):
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(WORKBENCH_DIR):
                reads.append(f"{name} {Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            return orig(self, *args, **kwargs)

        return reader

    for name in READERS:
        setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    try:
        yield reads
    finally:
        for name, orig in saved.items():
            if orig is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, orig)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x, ch_ids=None, rate_id=None, ch_mask=None):
        return {"logits": self.lin(x)}


class Data(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x[:, :3].argmax(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class CE(nn.Module):
    """Cross entropy logging accuracy as a 0-d tensor (or, with ``as_float``, a float); a NaN
    loss from step ``nan_at`` on."""

    def __init__(self, as_float=False, nan_at=None):
        super().__init__()
        self.as_float, self.nan_at, self.calls = as_float, nan_at, 0

    def forward(self, model, batch):
        self.calls += 1
        logits = model(batch["x"])["logits"]
        loss = F.cross_entropy(logits, batch["y"])
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        acc = (logits.argmax(1) == batch["y"]).float().mean()
        return loss, {"acc": float(acc) if self.as_float else acc.detach()}


def fit(tmp_path, steps, log_every, objective=None, epochs=1):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=epochs, lr=1e-2, schedule="constant", log_every=log_every,
                      keep_top_k=0, progress=False, seed=0, grad_clip=1.0)
    loader = DataLoader(Data(4 * steps), batch_size=4, shuffle=False)
    return Trainer(Net(), objective or CE(), cfg, tmp_path, device="cpu").fit(loader)


def test_trainer_reads_tensor_values_only_at_logging_intervals(tmp_path):
    counts = {}
    for steps in (3, 12):
        with count_host_reads() as reads:
            fit(tmp_path / f"quiet{steps}", steps, log_every=1000)
        counts[steps] = list(reads)
    # Between logging intervals nothing is read: the reads do not grow with the steps ...
    assert len(counts[3]) == len(counts[12]) <= 3, counts
    # ... while logging every step reads every step (the counter does see the reads).
    with count_host_reads() as reads:
        fit(tmp_path / "loud", 12, log_every=1)
    assert len(reads) >= 12 + len(counts[12])


def test_tensor_logs_and_float_logs_give_the_same_history(tmp_path):
    h_tensor = fit(tmp_path / "t", 6, log_every=2, objective=CE(as_float=False), epochs=2)
    h_float = fit(tmp_path / "f", 6, log_every=2, objective=CE(as_float=True), epochs=2)
    cols = ["loss", "acc", "grad_norm"]
    for c in cols:
        torch.testing.assert_close(torch.tensor(h_tensor[c].to_numpy()),
                                   torch.tensor(h_float[c].to_numpy()), rtol=1e-12, atol=0)
    assert h_tensor["acc"].between(0, 1).all()
    steps = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text()
             .splitlines() if '"step"' in line and '"event": "step"' in line]
    assert [s["step"] for s in steps] == [2, 4, 6, 8, 10, 12]
    assert all(isinstance(s["acc"], float) for s in steps)


def test_non_finite_loss_is_reported_at_the_step_it_occurred(tmp_path):
    # NaN from step 3 on, read at the logging interval of step 4: the error names step 3.
    with pytest.raises(FloatingPointError, match="epoch 1, step 3 "):
        fit(tmp_path, 8, log_every=4, objective=CE(nan_at=3))
    # Without a logging interval it is caught at the end of the epoch.
    with pytest.raises(FloatingPointError, match="epoch 1, step 5 "):
        fit(tmp_path / "b", 6, log_every=1000, objective=CE(nan_at=5))


# ----------------------------------------------------------------------------- the script
@pytest.mark.slow
def test_quick_cpu_run_writes_its_json(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(out),
                          "--device", "cpu", "--quick", "--threads", "1"], cwd=ROOT,
                         env=blocked_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| section | item | result |" in res.stdout  # the table comes last
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["env"]["models"] == list_models()

    rows = {r["model"]: r for r in data["models"]["rows"]}
    assert set(rows) == set(list_models())
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r)
        assert r["preset"] == "tiny" and r["finite"]
        assert 0 < r["rel_err_out"] <= gpu_check.OUT_TOL, name  # bf16 differs, but slightly
        assert 0 < r["rel_err_grad"] <= gpu_check.GRAD_TOL, name

    assert data["kernels"]["status"].startswith("skipped")
    tests = data["tests"]
    assert tests["counts"]["skipped"] >= 1 and tests["counts"]["failure"] == 0
    assert tests["counts"]["error"] == 0  # the gpu test files import without the data stack

    eff = data["efficiency"]
    assert {r["model"] for r in eff["rows"]} == {"eegm2", "eegm2_s5"}
    assert all(r["status"] == "ok" and r["peak_memory_bytes"] > 0 for r in eff["rows"])
    assert [r["length"] for r in eff["ratios"]] == eff["lengths"]

    mfu = data["mfu"]
    assert mfu["status"] == "ok" and mfu["flops_per_step"] > 0 and mfu["mfu"] is None
    assert mfu["params"] == max(r["params"] for r in rows.values())

    trainer = {r["config"]: r for r in data["trainer"]["rows"]}
    for label in ("float32", "bf16"):
        assert trainer[label]["status"] == "ok", trainer[label]
        assert trainer[label]["steps_per_s"] > 0
        assert all(math.isfinite(v) for v in trainer[label]["loss"])
    assert trainer["bf16+compile"]["status"].startswith("skipped")
