"""One-command check of the GPU paths: bf16 autocast, the fused Mamba kernels, the Trainer.

Prepared in advance for scarce GPU time: no network, one command, a few minutes on one modern
GPU, and only PyTorch (+ Triton), NumPy and pandas needed besides the few pure-Python wheels
listed in ``benchmarks/README.md`` (the data stack, MNE, papermill, plotly and umap, is never
imported). Sections, in this order; each is written to ``OUT_DIR/gpu_check.json`` as soon as it
ends, so a run cut short keeps what it measured:

1. ``env``: torch, CUDA, the card, Triton, ``mamba_ssm``.
2. ``models``: every registered model (``workbench.models.list_models()``) with its ``tiny``
   preset and, on a GPU, its ``paper`` preset: a forward + backward in float32 and under bf16
   autocast; relative error of the main output and of the gradients, time of each, peak memory.
3. ``kernels``: ``ssd_chunked`` and ``selective_scan`` (pure PyTorch) against ``mamba_ssm``'s
   fused kernels, forward and gradients, float32 and bf16 (skipped when ``mamba_ssm`` does not
   import or there is no GPU).
4. ``tests``: ``pytest -m gpu`` on the test files that carry the marker.
5. ``efficiency``: EEGM2 (paper preset, 16 channels) against its Transformer ablation S5,
   inference time and peak memory at 1,280 ... 12,800 samples (the paper's efficiency
   experiment, ``workbench.analysis.efficiency.measure_efficiency``; 15 warm-up runs).
6. ``mfu``: model FLOP utilisation of the largest model's training step (bf16 autocast + AdamW)
   against the card's dense bf16 peak; FLOPs from ``torch.utils.flop_counter.FlopCounterMode``
   (matrix products, convolutions and attention, the usual MFU convention).
7. ``trainer``: EEGM2 + ``ReconstructionObjective`` through ``workbench.training.Trainer``, two
   epochs each in float32, bf16 and bf16 + ``torch.compile``; steps/s of the second epoch and, on
   CUDA, the host synchronisations per step (``torch.cuda.set_sync_debug_mode``).

Usage::

    python benchmarks/gpu_check.py OUT_DIR [--device auto] [--quick] [--peak-tflops T]
                                   [--budget-s 420] [--skip SECTION ...] [--threads N]

``--quick`` (tiny presets, short inputs, few steps) with ``--device cpu`` checks the script
itself on any machine in about a minute (``tests/test_gpu_check.py``). The table printed last
summarises the JSON. Numbers are ratios measured in one run: compare them, not absolute times.

References
----------
.. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2: An efficient mamba-2-based self-supervised
   framework for long-sequence EEG modeling", arXiv:2502.17873, 2025, Section IV-D.
.. [2] T. Dao and A. Gu, "Transformers are SSMs", ICML 2024, arXiv:2405.21060.
.. [3] A. Chowdhery et al., "PaLM: Scaling language modeling with pathways", JMLR 2023,
   Appendix B (model FLOP utilisation).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import workbench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from workbench.models import create_model, list_models, model_presets  # noqa: E402
from workbench.models import registry as _registry  # noqa: E402

SECTIONS = ("env", "models", "kernels", "tests", "efficiency", "mfu", "trainer")
#: Values for constructor arguments without a default that a model's preset does not set (the
#: braindecode-style signal signature the workbench models share).
SIGNAL_KWARGS: dict[str, Any] = {"n_chans": 16, "n_outputs": 4, "n_classes": 4, "sfreq": 128.0}
MAIN_OUTPUTS = ("logits", "recon", "embedding", "tokens")
#: Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by a substring of the device name;
#: the first match wins, so the more specific names come first. ``--peak-tflops`` overrides.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H200", 989.0), ("H100", 989.0), ("H20", 148.0),
                    ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("RTX 4090", 165.0), ("A10G", 70.0), ("A10", 125.0))
OUT_TOL, GRAD_TOL = 0.05, 0.15  # bf16 vs float32 relative errors above these are flagged


# ----------------------------------------------------------------------------- helpers
def bf16_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a card from :data:`BF16_PEAK_TFLOPS`, ``None`` when unknown."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def missing_signal_kwargs(ctor: Callable[..., Any], given: dict[str, Any],
                          n_times: int) -> dict[str, Any]:
    """Values for the required constructor arguments of ``ctor`` that ``given`` lacks and that
    the shared signal signature names (``n_chans``, ``n_outputs``, ``n_times``, ``sfreq``)."""
    values = {**SIGNAL_KWARGS, "n_times": n_times}
    try:
        params = inspect.signature(ctor).parameters.values()
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: values[p.name] for p in params
            if p.kind in kinds and p.default is p.empty and p.name not in given
            and p.name in values}


def build(name: str, preset: str, n_times: int, **overrides: Any) -> tuple[torch.nn.Module, dict]:
    """``create_model(name, preset)`` plus the signal arguments it needs; returns the kwargs."""
    kwargs = dict(model_presets(name)[preset])
    # The registry exposes no constructor signature; its table is read here, not changed.
    extra = missing_signal_kwargs(_registry._MODELS[name], {**kwargs, **overrides}, n_times)
    return create_model(name, preset, **extra, **overrides), {**kwargs, **extra}


def tensors_of(out: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor in a model output (dicts, lists and tuples walked)."""
    if torch.is_tensor(out):
        if out.is_floating_point():
            yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from tensors_of(v)
    elif isinstance(out, list | tuple):
        for v in out:
            yield from tensors_of(v)


def main_output(out: Any) -> torch.Tensor:
    """The output that answers for the model: ``logits``, ``recon``, ``embedding`` or ``tokens``
    (the first present), else the first floating tensor."""
    if isinstance(out, dict):
        for key in MAIN_OUTPUTS:
            if torch.is_tensor(out.get(key)):
                return out[key]
    return next(tensors_of(out))


def scalar_loss(out: Any) -> torch.Tensor:
    """Mean square of every output that carries a gradient, summed (reaches every parameter
    that any output depends on)."""
    terms = [t.float().square().mean() for t in tensors_of(out) if t.requires_grad]
    if not terms:
        raise ValueError("The model output holds no tensor that requires a gradient.")
    return torch.stack(terms).sum()


def example_input(model: torch.nn.Module, n_chans: int, batch: int, n_times: int,
                  device: torch.device) -> torch.Tensor:
    """The first of ``(B, C, T)``, ``(B, 1, T)``, ``(B, T)`` that the model accepts."""
    err: Exception | None = None
    gen = torch.Generator().manual_seed(0)
    for shape in ((batch, n_chans, n_times), (batch, 1, n_times), (batch, n_times)):
        x = torch.randn(shape, generator=gen).to(device)
        try:
            with torch.no_grad():
                model(x)
            return x
        except (ValueError, RuntimeError, TypeError, IndexError) as e:
            err = e
    raise ValueError(f"no input shape accepted; last error: {err}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls (after the caller's warm-up)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / max(repeats, 1)


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One forward + backward: (main output in float32, all gradients flattened, parameters
    left without a gradient). The RNG is re-seeded first, so a model that draws at random (a
    masked pre-training model) draws the same in the float32 and the bf16 pass."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    ctx = (torch.autocast(x.device.type, dtype=torch.bfloat16) if amp
           else contextlib.nullcontext())
    with ctx:
        out = model(x)
        loss = scalar_loss(out)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad.float().flatten() for p in params if p.grad is not None]
    no_grad = sum(p.grad is None for p in params)
    return main_output(out).detach().float(), torch.cat(grads), no_grad


def step_flops(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> int:
    """FLOPs of one forward + backward of ``scalar_loss(model(x))`` by ``FlopCounterMode``
    (matrix products, convolutions, attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = scalar_loss(model(x))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def finite(v: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite(x) for x in v]
    return v


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:500]


# ----------------------------------------------------------------------------- sections
def section_env(args, device: torch.device) -> dict:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    from workbench.models.layers.ssm import mamba_ssm_available

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": str(device), "threads": torch.get_num_threads(),
            "triton": version("triton"), "mamba_ssm": version("mamba-ssm") or version("mamba_ssm"),
            "causal_conv1d": version("causal-conv1d") or version("causal_conv1d"),
            "mamba_ssm_kernels": mamba_ssm_available(), "models": list_models()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1),
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    bf16_peak_tflops=args.peak_tflops or bf16_peak_tflops(props.name))
    return info


def section_models(args, device: torch.device) -> dict:
    presets = ("tiny",) if args.quick or device.type != "cuda" else ("tiny", "paper")
    rows = []
    for name in list_models():
        for preset in presets:
            row: dict[str, Any] = {"model": name, "preset": preset}
            rows.append(row)
            if preset not in model_presets(name):
                row["status"] = f"skipped: no {preset!r} preset"
                continue
            spec = model_presets(name)[preset]
            patch = spec.get("patch_len") or spec.get("token_len")  # patch/token models
            T = int(spec.get("n_times") or (4 * patch if patch else
                                             (256 if preset == "tiny" else 1024)))
            B = 2 if preset == "tiny" else 4
            try:
                torch.manual_seed(0)
                model, kwargs = build(name, preset, T)
                model = model.to(device).eval()  # eval: no dropout, so f32 and bf16 compare
                x = example_input(model, int(kwargs.get("n_chans", 16)), B, T, device)
                row.update(params=sum(p.numel() for p in model.parameters()),
                           input_shape=list(x.shape), kwargs_added=sorted(
                               set(kwargs) - set(model_presets(name)[preset])))
                out32, g32, no_grad = fwd_bwd(model, x, amp=False)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                out16, g16, _ = fwd_bwd(model, x, amp=True)
                reps = 1 if args.quick else 3
                row.update(
                    rel_err_out=rel_err(out16, out32), rel_err_grad=rel_err(g16, g32),
                    finite=bool(torch.isfinite(out16).all() and torch.isfinite(g16).all()),
                    params_without_grad=int(no_grad),
                    ms_f32=1e3 * timed(lambda m=model, x=x: fwd_bwd(m, x, False), device, reps),
                    ms_bf16=1e3 * timed(lambda m=model, x=x: fwd_bwd(m, x, True), device, reps))
                if device.type == "cuda":
                    row["peak_mib_bf16"] = torch.cuda.max_memory_allocated(device) / 2**20
                ok = (row["finite"] and row["rel_err_out"] <= OUT_TOL
                      and row["rel_err_grad"] <= GRAD_TOL)
                row["status"] = "ok" if ok else "check: bf16 error above tolerance or non-finite"
            except Exception as err:  # one model's failure is a result, not the end of the run
                row.update(status="error", error=error_text(err),
                           traceback=traceback.format_exc(limit=4))
            finally:
                model = x = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return {"tolerances": {"out": OUT_TOL, "grad": GRAD_TOL}, "rows": rows}


def section_kernels(args, device: torch.device) -> dict:
    if device.type != "cuda":
        return {"status": "skipped: the fused kernels need CUDA"}
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as err:
        return {"status": f"skipped: mamba_ssm does not import ({error_text(err)}); "
                          "pip install mamba-ssm causal-conv1d to check the fused kernels"}
    fused = {"ssd": mamba_chunk_scan_combined, "selective_scan": selective_scan_fn}
    rows = kernel_rows(device, fused, length=512 if args.quick else 4096,
                       repeats=3 if args.quick else 10)
    return {"status": "ok", "rows": rows}


def kernel_rows(device: torch.device, fused: dict[str, Callable[..., Any]], length: int,
                repeats: int, width: int = 512, headdim: int = 64, state: int = 64,
                chunk: int = 256) -> list[dict]:
    """Our scans against ``fused["ssd"]`` (``mamba_chunk_scan_combined``'s signature) and
    ``fused["selective_scan"]`` (``selective_scan_fn``'s) in float32 and bf16: relative error of
    the output and of every input gradient, and the time of forward + backward of each."""
    import torch.nn.functional as F

    from workbench.models.layers.ssm import selective_scan, ssd_chunked

    b, h, L, n1 = 2, width // headdim, length, 16
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device=device).manual_seed(0)

        def rnd(*shape, g=g):
            return torch.randn(*shape, generator=g, device=device)

        # x, dt (positive), A (negative), B, C, D: one group, as in EEGM2's blocks
        ssd_args = [rnd(b, L, h, headdim).to(dtype), F.softplus(rnd(b, L, h) - 2).to(dtype),
                    -(torch.rand(h, generator=g, device=device) * 4 + 0.5),
                    rnd(b, L, 1, state).to(dtype), rnd(b, L, 1, state).to(dtype), rnd(h)]
        # u, delta, A, B, C, D, z, delta_bias
        scan_args = [rnd(b, width, L).to(dtype), rnd(b, width, L).to(dtype),
                     -(torch.rand(width, n1, generator=g, device=device) + 0.1),
                     rnd(b, n1, L).to(dtype), rnd(b, n1, L).to(dtype), rnd(width),
                     rnd(b, width, L).to(dtype), rnd(width)]
        cases = {
            "ssd": (lambda a, f: f(*a[:5], chunk, D=a[5]), ssd_chunked, ssd_args),
            "selective_scan": (lambda a, f: f(*a[:6], z=a[6], delta_bias=a[7],
                                              delta_softplus=True), selective_scan, scan_args),
        }
        for op, (call, ours, inputs) in cases.items():
            row: dict[str, Any] = {"op": op, "dtype": str(dtype).removeprefix("torch."),
                                   "length": L}
            rows.append(row)
            try:
                leaves = [t.clone().requires_grad_() for t in inputs]
                res = {}
                for which, fn in (("torch", ours), ("fused", fused[op])):
                    y = call(leaves, fn)
                    w = torch.randn(y.shape, generator=torch.Generator(device=device)
                                    .manual_seed(1), device=device).to(y.dtype)
                    res[which] = (y, torch.autograd.grad((y.float() * w.float()).sum(), leaves))

                    def step(fn=fn, w=w, leaves=leaves, call=call):
                        out = call(leaves, fn)
                        torch.autograd.grad((out.float() * w.float()).sum(), leaves)

                    step()
                    row[f"ms_{which}"] = 1e3 * timed(step, device, repeats)
                row["rel_err_out"] = rel_err(res["fused"][0], res["torch"][0])
                row["rel_err_grad_max"] = max(rel_err(a, b) for a, b in
                                              zip(res["fused"][1], res["torch"][1]))
                row["speedup_fused"] = row["ms_torch"] / row["ms_fused"]
                tol = 1e-3 if dtype == torch.float32 else 3e-2
                row["status"] = ("ok" if row["rel_err_out"] <= tol
                                 and row["rel_err_grad_max"] <= 10 * tol else "check")
            except Exception as err:
                row.update(status="error", error=error_text(err))
    return rows


def section_tests(args, device: torch.device, out_dir: Path) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"status": "skipped: pytest is not installed (see benchmarks/README.md)"}
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    xml = out_dir / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *files]
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                             timeout=120 if args.quick else 300)
    except subprocess.TimeoutExpired:
        return {"status": "error: pytest -m gpu timed out", "files": files}
    cases = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            msg = next((c.get("message", "") for c in case
                        if c.tag in ("failure", "error", "skipped")), "")
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}",
                          "outcome": kind, "message": msg[:300]})
    counts = {k: sum(c["outcome"] == k for c in cases)
              for k in ("passed", "failure", "error", "skipped")}
    return {"status": "ok" if res.returncode in (0, 5) else f"failed (exit {res.returncode})",
            "files": files, "counts": counts, "cases": cases,
            "output_tail": (res.stdout + res.stderr)[-2000:]}


def section_efficiency(args, device: torch.device) -> dict:
    from workbench.analysis.efficiency import measure_efficiency

    quick = args.quick
    lengths = [128, 256] if quick else [1280 * k for k in range(1, 11)]
    warmup, repeats = (1, 1) if quick else (15, 10)
    tables, rows = {}, []
    # EEGM2 and its ablation S5 (Transformer blocks): one registered model, two block types
    for name, block in (("eegm2", "mamba2"), ("eegm2_s5", "transformer")):
        try:
            df = measure_efficiency(lambda block=block: create_model("eegm2", "paper", n_chans=16,
                                                                     block=block),
                                    16, lengths, warmup=warmup, repeats=repeats,
                                    device=str(device), name=name)
            tables[name] = df.set_index("length")
            rows += df.to_dict("records")
        except Exception as err:
            rows.append({"model": name, "status": "error", "error": error_text(err)})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ratios = []
    if len(tables) == 2:
        e, s = tables["eegm2"], tables["eegm2_s5"]
        for length in lengths:
            ratios.append({"length": length,
                           "time_s5_over_eegm2": float(s.loc[length, "seconds_per_call"]
                                                       / e.loc[length, "seconds_per_call"]),
                           "memory_s5_over_eegm2": float(s.loc[length, "peak_memory_bytes"]
                                                         / e.loc[length, "peak_memory_bytes"])})
    growth = {name: float(t["peak_memory_bytes"].iloc[-1] / t["peak_memory_bytes"].iloc[0])
              for name, t in tables.items()}
    return {"lengths": lengths, "warmup": warmup, "repeats": repeats, "rows": rows,
            "ratios": ratios, "memory_growth_last_over_first": growth}


def section_mfu(args, device: torch.device, models: dict | None) -> dict:
    ok = [r for r in (models or {}).get("rows", []) if r.get("status") == "ok"]
    if not ok:
        return {"status": "skipped: no model passed the models section"}
    best = max(ok, key=lambda r: r["params"])
    name, preset, shape = best["model"], best["preset"], best["input_shape"]
    T = shape[-1]
    torch.manual_seed(0)
    model = build(name, preset, T)[0].to(device).train()
    x = torch.randn(shape, device=device)
    amp = device.type == "cuda"
    try:  # FlopCounterMode sees no FLOPs inside fused kernels: count on the torch scans
        counted = build(name, preset, T, backend="torch")[0].to(device).train()
    except TypeError:
        counted = model
    flops = step_flops(counted, x, amp)
    counted = None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = scalar_loss(model(x))
        loss.backward()
        opt.step()

    for _ in range(1 if args.quick else 3):
        step()
    sec = timed(step, device, 2 if args.quick else 10)
    peak = None
    if device.type == "cuda":
        peak = args.peak_tflops or bf16_peak_tflops(torch.cuda.get_device_name(device))
    achieved = flops / sec / 1e12
    return {"status": "ok", "model": name, "preset": preset, "input_shape": shape,
            "params": best["params"], "amp": "bf16" if amp else "float32",
            "flops_per_step": flops, "seconds_per_step": sec, "achieved_tflops": achieved,
            "peak_bf16_tflops": peak, "mfu": achieved / peak if peak else None}


class _Windows(torch.utils.data.Dataset):
    """Random EEG-shaped windows as batch dicts (the Trainer's contract)."""

    def __init__(self, n: int, n_chans: int, n_times: int) -> None:
        self.x = torch.randn(n, n_chans, n_times, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i]}


TRAINER_CONFIGS = {"float32": ("none", False), "bf16": ("bf16", False),
                   "bf16+compile": ("bf16", True)}


def trainer_run(args, device: torch.device, label: str) -> dict:
    """Two epochs of EEGM2 + ReconstructionObjective through the Trainer in one configuration."""
    from workbench.config import TrainConfig
    from workbench.objectives import ReconstructionObjective
    from workbench.training import Trainer

    cuda = device.type == "cuda"
    amp, compiled = TRAINER_CONFIGS[label]
    preset = "tiny" if args.quick or not cuda else "paper"
    B, T, steps = (4, 256, 3) if args.quick else (16, 1280, 30)
    row: dict[str, Any] = {"config": label, "model": "eegm2", "preset": preset, "batch": B,
                           "length": T, "steps_per_epoch": steps}
    loader = torch.utils.data.DataLoader(_Windows(B * steps, 16, T), batch_size=B,
                                         pin_memory=cuda)
    torch.manual_seed(0)
    model = create_model("eegm2", preset, n_chans=16)
    if compiled:
        model.compile()  # in place: parameter names (and checkpoints) unchanged
    cfg = TrainConfig(epochs=2, lr=1e-4, schedule="constant", amp=amp, log_every=10**9,
                      keep_top_k=0, progress=False, seed=0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        objective = _StepMarks(ReconstructionObjective(), w)
        if cuda:  # every host synchronisation becomes a warning, with its source line
            torch.cuda.set_sync_debug_mode("warn")
        try:
            hist = Trainer(model, objective, cfg, tmp, device=str(device)).fit(loader)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    row.update(status="ok", seconds_epoch1=float(hist["seconds"].iloc[0]),
               seconds_epoch2=float(hist["seconds"].iloc[1]),
               steps_per_s=steps / float(hist["seconds"].iloc[1]),
               loss=[float(v) for v in hist["loss"]])
    if cuda:
        # The steps of epoch 2 only: no compilation, epoch-end reads or checkpoint copies.
        first, last = objective.marks[steps - 1], objective.marks[2 * steps - 1]
        where: dict[str, int] = {}
        for x in w[first:last]:
            if "synchroniz" in str(x.message).lower():
                key = f"{Path(x.filename).name}:{x.lineno}"
                where[key] = where.get(key, 0) + 1
        row.update(host_syncs_per_step=sum(where.values()) / steps,
                   sync_sites=dict(sorted(where.items(), key=lambda kv: -kv[1])[:8]))
    return row


class _StepMarks(torch.nn.Module):
    """An objective that also notes how many warnings were recorded when each step ended (the
    Trainer's ``on_step_end`` hook), to count the host synchronisations of given steps."""

    def __init__(self, objective: torch.nn.Module, record: list) -> None:
        super().__init__()
        self.objective, self.record, self.marks = objective, record, []

    def forward(self, model, batch):
        return self.objective(model, batch)

    def on_step_end(self, model, step: int, total_steps: int) -> None:
        self.marks.append(len(self.record))


def compile_in_subprocess(args, device: torch.device, timeout: float) -> dict:
    """The ``bf16+compile`` run in a child process, so that a slow compilation cannot overrun
    the time budget (the child is killed at ``timeout``)."""
    row: dict[str, Any] = {"config": "bf16+compile", "model": "eegm2"}
    if timeout < 30:
        return {**row, "status": f"skipped: {timeout:.0f} s left in the time budget"}
    sub = args.out_dir / "compile_run"
    cmd = [sys.executable, str(Path(__file__).resolve()), str(sub), "--device", str(device),
           "--trainer-configs", "bf16+compile", "--budget-s", "1e9", "--threads",
           str(args.threads), "--skip", *[s for s in SECTIONS if s != "trainer"]]
    cmd += ["--quick"] if args.quick else []
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timeout: torch.compile run killed after {timeout:.0f} s"}
    try:
        return json.loads((sub / "gpu_check.json").read_text())["trainer"]["rows"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return {**row, "status": f"error (exit {res.returncode})",
                "error": (res.stdout + res.stderr)[-500:]}


def section_trainer(args, device: torch.device, deadline: float) -> dict:
    labels = (list(TRAINER_CONFIGS) if args.trainer_configs == ["all"]
              else list(args.trainer_configs))
    in_child = labels == ["bf16+compile"]  # this process is the compile child
    rows = []
    for label in labels:
        if label == "bf16+compile" and not in_child:
            if args.quick and device.type != "cuda" and not args.compile:
                rows.append({"config": label, "model": "eegm2", "status":
                             "skipped: torch.compile on a CPU takes minutes (--compile)"})
            else:
                rows.append(compile_in_subprocess(args, device, deadline - time.perf_counter()))
            continue
        try:
            rows.append(trainer_run(args, device, label))
        except Exception as err:
            rows.append({"config": label, "model": "eegm2", "status": "error",
                         "error": error_text(err), "traceback": traceback.format_exc(limit=6)})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = next((r for r in rows if r["config"] == "float32" and r["status"] == "ok"), None)
    for r in rows:
        if base and r["status"] == "ok":
            r["speedup_vs_float32"] = r["steps_per_s"] / base["steps_per_s"]
    return {"rows": rows}


# ----------------------------------------------------------------------------- summary
def summary_rows(res: dict) -> list[tuple[str, str, str]]:
    """(section, item, result) lines of the final table."""
    out = []
    env = res.get("env", {})
    out.append(("env", env.get("device_name", env.get("device", "?")),
                f"torch {env.get('torch')}, triton {env.get('triton')}, "
                f"mamba_ssm kernels {env.get('mamba_ssm_kernels')}"))
    for r in res.get("models", {}).get("rows", []):
        if r.get("status") in ("ok", ) or str(r.get("status", "")).startswith("check"):
            out.append(("models", f"{r['model']} ({r['preset']})",
                        f"bf16 rel err out {r['rel_err_out']:.1e} grad {r['rel_err_grad']:.1e}; "
                        f"f32/bf16 time x{r['ms_f32'] / r['ms_bf16']:.2f}; {r['status']}"))
        else:
            out.append(("models", f"{r['model']} ({r['preset']})",
                        f"{r.get('status')} {r.get('error', '')}"[:90]))
    k = res.get("kernels", {})
    for r in k.get("rows", []):
        out.append(("kernels", f"{r['op']} {r['dtype']}",
                    f"rel err {r.get('rel_err_out', float('nan')):.1e}, fused x"
                    f"{r.get('speedup_fused', float('nan')):.1f}; {r['status']}"))
    if "rows" not in k and k:
        out.append(("kernels", "mamba_ssm", k.get("status", "")[:90]))
    t = res.get("tests", {})
    if t:
        out.append(("tests", "pytest -m gpu", f"{t.get('counts', {})}; {t.get('status')}"))
    e = res.get("efficiency", {})
    if e.get("ratios"):
        last = e["ratios"][-1]
        out.append(("efficiency", f"S5 / EEGM2 at {last['length']}",
                    f"time x{last['time_s5_over_eegm2']:.2f}, "
                    f"memory x{last['memory_s5_over_eegm2']:.2f}"))
        for name, g in e.get("memory_growth_last_over_first", {}).items():
            out.append(("efficiency", f"{name} memory {e['lengths'][-1]}/{e['lengths'][0]}",
                        f"x{g:.1f} (length x{e['lengths'][-1] / e['lengths'][0]:.0f})"))
    m = res.get("mfu", {})
    if m.get("status") == "ok":
        mfu = f"MFU {100 * m['mfu']:.1f} %" if m.get("mfu") is not None else "peak unknown"
        out.append(("mfu", f"{m['model']} ({m['preset']})",
                    f"{m['flops_per_step'] / 1e9:.2f} GFLOP/step, "
                    f"{m['achieved_tflops']:.3g} TFLOP/s, {mfu}"))
    elif m:
        out.append(("mfu", "", str(m.get("status"))[:90]))
    for r in res.get("trainer", {}).get("rows", []):
        if r["status"] == "ok":
            syncs = (f", {r['host_syncs_per_step']:.2f} syncs/step"
                     if "host_syncs_per_step" in r else "")
            out.append(("trainer", r["config"], f"{r['steps_per_s']:.2f} steps/s, x"
                        f"{r.get('speedup_vs_float32', float('nan')):.2f} vs float32{syncs}"))
        else:
            out.append(("trainer", r["config"], f"{r['status']} {r.get('error', '')}"[:90]))
    for name, s in res.get("section_seconds", {}).items():
        out.append(("time", name, f"{s:.1f} s"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="folder for gpu_check.json (created)")
    ap.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny presets, short inputs, few steps")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the card's dense bf16 peak (TFLOP/s) when it is not in the table")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="sections that would start after this many seconds are skipped")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to skip")
    ap.add_argument("--compile", action="store_true",
                    help="also torch.compile on a CPU with --quick (minutes of compilation)")
    ap.add_argument("--deadline-s", type=float, default=470.0,
                    help="the torch.compile run (in a child process) is killed at this time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--trainer-configs", nargs="+", default=["all"],
                    choices=["all", *TRAINER_CONFIGS], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from workbench.utils import get_device

    device = get_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "gpu_check.json"
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                           "section_seconds": {}}
    t_start = time.perf_counter()
    runners = {
        "env": lambda: section_env(args, device),
        "models": lambda: section_models(args, device),
        "kernels": lambda: section_kernels(args, device),
        "tests": lambda: section_tests(args, device, args.out_dir),
        "efficiency": lambda: section_efficiency(args, device),
        "mfu": lambda: section_mfu(args, device, res.get("models")),
        "trainer": lambda: section_trainer(args, device, t_start + args.deadline_s),
    }
    for name in SECTIONS:
        elapsed = time.perf_counter() - t_start
        if name in args.skip:
            res[name] = {"status": "skipped: --skip"}
            continue
        if elapsed > args.budget_s:
            res[name] = {"status": f"skipped: time budget ({elapsed:.0f} s > {args.budget_s} s)"}
            continue
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            res[name] = runners[name]()
        except Exception as err:
            res[name] = {"status": "error", "error": error_text(err),
                         "traceback": traceback.format_exc(limit=6)}
        res["section_seconds"][name] = time.perf_counter() - t0
        res["total_seconds"] = time.perf_counter() - t_start
        path.write_text(json.dumps(finite(res), indent=1, default=str))  # after every section
    res["total_seconds"] = time.perf_counter() - t_start
    path.write_text(json.dumps(finite(res), indent=1, default=str))
    print(f"\ngpu_check on {device} in {res['total_seconds']:.0f} s; full results: {path}\n")
    print("| section | item | result |\n|---|---|---|")
    for row in summary_rows(res):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
