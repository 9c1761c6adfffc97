"""Small shared utilities: logging, seeding, devices, atomic writes and input checks.

The check helpers follow MNE-Python's ``_check_option`` / ``_validate_type``: they raise
errors that name the parameter, the expected value and what was given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("workbench")


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the library logger (``workbench`` or a child of it)."""
    return logger if not name else logging.getLogger(f"workbench.{name}")


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to the *current* ``sys.stderr``: one bound to the stream of the
    moment it was made fails ("I/O operation on closed file") once that stream is replaced
    and closed (pytest's capture, a notebook kernel's redirection)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; always follow sys.stderr
        pass


def set_log_level(level: int | str = "INFO") -> None:
    """Route workbench logs to stderr at ``level`` (for notebooks and the CLI)."""
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.NullHandler)
               for h in logger.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s",
                                         "%H:%M:%S"))
        logger.addHandler(h)
    logger.setLevel(level)


# ----------------------------------------------------------------------------- checks
def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"Invalid value for the '{name}' parameter: expected one of "
                         f"{allowed}, got {value!r}.")
    return value


def check_positive(name: str, value: float, *, strict: bool = True) -> float:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is (strictly) positive."""
    ok = value > 0 if strict else value >= 0
    if not ok:
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"Invalid value for the '{name}' parameter: expected {rel}, got {value!r}.")
    return value


# ----------------------------------------------------------------------------- seeding
def seed_everything(seed: int, *, deterministic: bool = False) -> np.random.Generator:
    """Seed ``random``, NumPy and PyTorch in one call and return a NumPy Generator.

    Parameters
    ----------
    seed : int
        The seed.
    deterministic : bool
        Also ask PyTorch for deterministic algorithms (slower on GPU).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeding the legacy global RNG is the point
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- devices
def get_device(device: str = "auto"):
    """Resolve ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` to a ``torch.device``.

    ``auto`` picks CUDA when available and the CPU otherwise; asking for CUDA on a machine
    without it is an error that says so.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Invalid value for the 'device' parameter: {device!r} requested but "
                         "CUDA is not available on this machine; use 'auto' or 'cpu'.")
    if not (device == "cpu" or str(device).startswith("cuda")):
        raise ValueError(f"Invalid value for the 'device' parameter: expected 'auto', 'cpu' or "
                         f"'cuda[:N]', got {device!r}.")
    return torch.device(device)


# ----------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    A crash inside the block leaves any previous file at ``path`` untouched and removes the
    temporary file. The rename is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short SHA-256 of a JSON-serialisable object (sorted keys): cache keys."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_digest(path: str | os.PathLike, n: int = 16, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (first ``n`` hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:n]
