"""Run records: the metrics each notebook records, and the provenance of a run."""


from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..utils import atomic_write_json
from .export import _check_notebook, _locked, _now

logger = logging.getLogger("workbench")

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVENANCE_PACKAGES = ("torch", "numpy", "scipy", "pandas", "mne", "mne-icalabel", "scikit-learn",
                       "papermill", "umap-learn", "plotly", "matplotlib")


def _jsonable(value: Any, key: str) -> Any:
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, key) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), key)
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item") and hasattr(value, "numel"):  # a torch tensor
        if value.numel() != 1:
            raise ValueError(f"Metric {key!r} is a tensor of {value.numel()} elements; record "
                             "a number (call .item()) or a list.")
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Metric {key!r} has type {type(value).__name__}; expected a number, string, "
                    "bool, None, list or dict.")


def metrics_path(notebook: str, run_dir: str | os.PathLike) -> Path:
    """``run_dir/metrics/<notebook>.json``."""
    return Path(run_dir) / "metrics" / f"{_check_notebook(notebook)}.json"


def record_metrics(notebook: str, metrics: Mapping[str, Any],
                   run_dir: str | os.PathLike = "runs/manual") -> dict[str, Any]:
    """Merge ``metrics`` into ``run_dir/metrics/<notebook>.json`` (atomically) and return them all.

    Keys already recorded by earlier calls are kept unless ``metrics`` sets them again. Values
    may be numbers (NumPy / 1-element torch scalars included), strings, bools, lists or dicts.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"record_metrics expects a mapping of metric name -> value, got "
                        f"{type(metrics).__name__}.")
    new = {str(k): _jsonable(v, str(k)) for k, v in metrics.items()}
    path = metrics_path(notebook, run_dir)
    with _locked(path.parent):
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(new)
        atomic_write_json(path, current)
    return current


def load_metrics(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every notebook's recorded metrics: ``{notebook: {key: value}}``, sorted by notebook."""
    folder = Path(run_dir) / "metrics"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# ----------------------------------------------------------------------------- provenance
def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where and with what a run was made.

    Returns
    -------
    info : dict
        ``timestamp``, ``git_commit`` (40 hex digits, None outside a git checkout), ``git_dirty``
        (tracked files modified), ``python``, ``platform``, ``cpu_count``, ``cuda_device`` (name
        of GPU 0 or None), ``workbench`` (version) and ``packages`` (name -> version or None).
    """
    import workbench

    root = Path(repo) if repo is not None else REPO_ROOT
    commit = dirty = None
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    cuda = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {
        "timestamp": _now(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_device": cuda,
        "workbench": workbench.__version__,
        "packages": {p: _version(p) for p in PROVENANCE_PACKAGES},
    }


