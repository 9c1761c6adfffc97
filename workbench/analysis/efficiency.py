"""Time and peak memory of a model against sequence length (the EEGM2 efficiency experiment).

Peak memory is measured, not estimated:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the bytes
  allocated before the call (parameters, inputs): the peak of tensor memory the call added.
* CPU: the PyTorch profiler with ``profile_memory=True`` records every allocation and free of
  the call with its size and time; the running sum of those events, sorted by time, is the live
  tensor memory the call added, and its maximum is the peak. (Process RSS, ``ru_maxrss`` or
  ``tracemalloc`` do not see through the CPU allocator's caching and Python's view of memory;
  this counts tensor bytes exactly, like the CUDA number.)

References
----------
.. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2: An efficient mamba-2-based self-supervised
   framework for long-sequence EEG modeling", arXiv:2502.17873, 2025, Section IV-D.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from workbench.utils import get_device

logger = logging.getLogger("workbench")

__all__ = ["cpu_peak_memory", "measure_efficiency", "peak_memory"]


def best_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """The minimum time of each function over ``repeats`` runs, after ``warmup`` runs.

    The runs are interleaved (a, b, a, b, ...), so a load drift on a shared machine slows every
    candidate alike and their ratio stays meaningful; the benchmark scripts print such ratios.
    ``clock=time.process_time`` measures CPU time instead of wall time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            best[k] = min(best[k], clock() - t0)
    return best


def cpu_peak_memory(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn()`` under the profiler; return (peak bytes of CPU tensor memory it added, result).

    Memory freed by ``fn`` before returning still counts at its peak; memory held by the result
    counts too (it is live at the end).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    kineto = getattr(prof.profiler, "kineto_results", None)
    if kineto is None:  # pragma: no cover - depends on the torch build
        raise RuntimeError("This PyTorch build records no profiler memory events; CPU peak "
                           "memory cannot be measured.")
    events = sorted((e.start_ns(), e.nbytes()) for e in kineto.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return int(peak), result


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, Any]:
    """Peak tensor bytes ``fn()`` adds on ``device`` (CUDA counters or the CPU profiler)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base), result
    return cpu_peak_memory(fn)


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    msg = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in msg or "not enough memory" in msg or "can't allocate" in msg
        or isinstance(err, MemoryError))


def measure_efficiency(build_model: Callable[[], nn.Module], n_chans: int,
                       lengths: Sequence[int], batch_size: int = 1, warmup: int = 15,
                       repeats: int = 10, device: str = "cpu", backward: bool = False,
                       name: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Seconds per call, samples per ms and peak memory of a model for several input lengths.

    Parameters
    ----------
    build_model : callable
        Returns the model (built once, moved to ``device``); called as ``model(x)`` with ``x``
        (batch_size, n_chans, length); the output may be a tensor or a dict of tensors.
    n_chans : int
        Input channels.
    lengths : sequence of int
        Sequence lengths (samples).
    batch_size : int
        Windows per call.
    warmup : int
        Untimed calls before timing each length (the paper: 15).
    repeats : int
        Timed calls; the mean is reported (the paper: 10).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    backward : bool
        Time forward + backward (sum of the outputs) in train mode instead of inference
        (``eval`` mode, ``torch.no_grad``).
    name : str, optional
        Value of the ``model`` column.
    seed : int
        Seed of the random inputs.

    Returns
    -------
    DataFrame
        One row per length: ``model, length, batch_size, device, mode, seconds_per_call,
        samples_per_ms`` (windows per millisecond, the paper's "samples/ms"),
        ``peak_memory_bytes`` (peak tensor memory added by one call, measured as the module
        docstring says), ``status`` (``"ok"`` or ``"oom"``, with NaN metrics).
    """
    dev = get_device(device)
    model = build_model().to(dev)
    model.train(backward)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for length in lengths:
        x = torch.randn(batch_size, n_chans, int(length), generator=gen).to(dev)

        def call(x=x):
            if backward:
                out = model(x)
                outs = out.values() if isinstance(out, dict) else [out]
                loss = sum(o.float().sum() for o in outs if isinstance(o, torch.Tensor)
                           and o.requires_grad)
                loss.backward()
                model.zero_grad(set_to_none=True)
                return None
            with torch.no_grad():
                model(x)
            return None

        row = {"model": name or type(model).__name__, "length": int(length),
               "batch_size": batch_size, "device": str(dev),
               "mode": "train" if backward else "inference"}
        try:
            peak, _ = peak_memory(call, dev)
            for _ in range(warmup):
                call()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            for _ in range(repeats):
                call()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            sec = (time.perf_counter() - t0) / max(repeats, 1)
            row.update(seconds_per_call=sec, samples_per_ms=batch_size / (sec * 1e3),
                       peak_memory_bytes=peak, status="ok")
        except Exception as err:  # only out-of-memory is a result; anything else is a bug
            if not _is_oom(err):
                raise
            logger.warning("%s: out of memory at length %d (%s)", row["model"], length, err)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            row.update(seconds_per_call=float("nan"), samples_per_ms=float("nan"),
                       peak_memory_bytes=float("nan"), status="oom")
        rows.append(row)
        logger.info("efficiency %s", row)
    return pd.DataFrame(rows)
