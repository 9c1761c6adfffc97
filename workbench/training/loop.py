"""Pieces of the training loop that hold no policy: batches on a device, RNG state for exact
resumes, device-side sums of the step logs (no host sync per step), the JSONL log."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import get_logger

logger = get_logger("training")

Batch = Mapping[str, Any]


# ----------------------------------------------------------------------------- helpers
def move_to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    """Every tensor of a batch dict on ``device`` (other values unchanged)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"A batch must be a dict of tensors (see docs/contracts.md), got "
                        f"{type(batch).__name__}.")
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_size(batch: Batch) -> int:
    """Samples in a batch: the first dimension of ``x`` (else of the first tensor)."""
    if torch.is_tensor(batch.get("x")):
        return int(batch["x"].shape[0])
    for v in batch.values():
        if torch.is_tensor(v) and v.ndim > 0:
            return int(v.shape[0])
    return 1


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler and batch sampler when they have it."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    # The legacy global NumPy state is what user code seeded by seed_everything draws from.
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np_state = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                n["cached_gaussian"])
    np.random.set_state(np_state)  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [t.cpu() for t in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _plain(v: Any) -> Any:
    """A JSON/``weights_only``-friendly scalar."""
    if torch.is_tensor(v):
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool | int):
        return int(v)
    return float(v)


def _as_floats(values: Mapping[str, Any]) -> dict[str, float]:
    """Python floats of numbers and 0-d tensors, with one device read for all the tensors."""
    keys = [k for k, v in values.items() if torch.is_tensor(v)]
    out = {k: _plain(v) for k, v in values.items() if not torch.is_tensor(v)}
    if keys:
        devices = {values[k].device for k in keys}
        if len(devices) == 1:  # the usual case: one copy to the host
            read = torch.stack([values[k].detach().reshape(()).double() for k in keys]).tolist()
        else:
            read = [_plain(values[k]) for k in keys]
        out.update(zip(keys, read))
    return {k: float(out[k]) for k in values}


class _StepSums:
    """Sample-weighted sums of per-step values, kept on the device until they are read.

    ``add`` takes Python numbers or 0-d tensors; a tensor joins its running sum without a host
    synchronisation, so the training loop never waits for the GPU between logging intervals.
    The first step whose loss is not finite is tracked on the device as well.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}  # float or 0-d float64 tensor
        self.counts: dict[str, float] = {}
        self.n = 0
        self.first_bad: torch.Tensor | None = None  # step number, -1 while all losses are finite

    def add(self, values: Mapping[str, Any], n: int) -> None:
        for k, v in values.items():
            if torch.is_tensor(v):
                v = v.detach().reshape(()).double()
            elif isinstance(v, np.generic):
                v = v.item()
            self.sums[k] = self.sums.get(k, 0.0) + v * n
            self.counts[k] = self.counts.get(k, 0.0) + n
        self.n += n

    def watch(self, loss: torch.Tensor, step: int) -> None:
        """Remember ``step`` if ``loss`` is the first non-finite loss (no synchronisation)."""
        bad = ~torch.isfinite(loss.detach())
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def check_finite(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Raise ``FloatingPointError`` if a watched loss was not finite (reads the device)."""
        if self.first_bad is None:
            return
        step = int(self.first_bad)
        if step >= 0:
            raise FloatingPointError(f"Non-finite loss at epoch {epoch}, step {step} "
                                     f"(logs at detection: {dict(logs or {})}).")


class _JsonlLog:
    """Append-only JSON-lines metric log, one flushed line per event."""

    def __init__(self, path: Path | None, append: bool = True):
        self.f = open(path, "a" if append else "w", encoding="utf-8") if path is not None else None

    def write(self, event: str, **fields: Any) -> None:
        if self.f is None:
            return
        rec = {"event": event, "time": time.time()}
        for k, v in fields.items():
            v = _plain(v) if not isinstance(v, str) else v
            rec[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
