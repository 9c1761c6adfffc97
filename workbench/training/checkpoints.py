"""Checkpoints: atomic saves, weights-only loads, a top-k keeper, models rebuilt from files.

Every checkpoint is a dict of tensors and plain Python values (no pickled classes or
functions), so it loads with ``torch.load(weights_only=True)`` and a file from an untrusted
source cannot run code. Saves go to a temporary file in the same folder, are fsync'ed and then
renamed over the target (``os.replace``, atomic on POSIX): a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils import atomic_path, check_option, get_logger

logger = get_logger("training")

CHECKPOINT_FORMAT = "workbench-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded safely (corrupt, truncated, needs code)."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, ``os.replace``).

    ``format`` and ``version`` keys are added. On any error the temporary file is removed and
    a previous file at ``path`` is left untouched.
    """
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not possible on every platform/file system.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a save killed mid-write (``.<name>.*.tmp``)."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.pt.*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        logger.info("Removed %d temporary file(s) of interrupted checkpoint writes in %s.",
                    len(removed), folder)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointError
        Naming the file, when it is corrupt or truncated, or when it holds pickled classes or
        functions (it would need arbitrary code to load; this function never does that).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        found = re.search(r"GLOBAL (\S+)", msg)
        if found or "Unsupported global" in msg:
            what = found.group(1) if found else "a class or function"
            raise CheckpointError(
                f"Checkpoint {path} contains {what}, which would need arbitrary code to "
                "load; it is refused (loads use weights_only=True). Re-save it as a dict of "
                "tensors and plain values.") from None
        detail = re.search(r"Unsupported operand \S+", msg)
        raise CheckpointError(f"Checkpoint {path} is not a readable PyTorch checkpoint (corrupt, "
                              "truncated or not written by torch.save)"
                              + (f": {detail.group(0)}." if detail else ".")) from None
    except OSError:
        raise
    except Exception as e:  # the unpickler fails on garbage in many ways (EOF, Index, Runtime)
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}).") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, expected a dict.")
    return obj


def build_model_from_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                                strict: bool = True) -> nn.Module:
    """Rebuild the model of a checkpoint from its ``model_spec`` and load its weights.

    The spec (``{"name", "preset", "overrides"}``) goes to :func:`workbench.models.create_model`.
    The model is returned in eval mode on ``map_location``.
    """
    from ..models import create_model

    ckpt = load_checkpoint(path, map_location=map_location)
    spec = ckpt.get("model_spec")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"Checkpoint {path} has no model_spec ({spec!r}); pass "
                              "model_spec={'name', 'preset', 'overrides'} to the Trainer, or build "
                              "the model yourself and load ckpt['model'].")
    model = create_model(spec["name"], spec.get("preset"), **dict(spec.get("overrides") or {}))
    model.load_state_dict(ckpt["model"], strict=strict)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model.eval()


class TopKCheckpoints:
    """Keep the checkpoints of the ``k`` best epochs by a monitored value.

    Files are ``folder/epoch{E:03d}.pt``; a checkpoint pushed out of the best ``k`` is deleted.
    Ties keep the earlier epoch. NaN values are never kept.

    Parameters
    ----------
    k : int
        How many to keep (0 keeps none).
    monitor : str
        The history key compared (e.g. ``"val_loss"``, ``"val_accuracy"``).
    mode : {"min", "max"}
        Whether lower or higher is better.
    folder : path, optional
        Where the files go (set by the Trainer to ``out_dir/top``).

    References
    ----------
    .. [1] Top-5 checkpoint ensembling in "One Model for All: Universal Pre-training for EEG
       Classification" (the workbench's method 1).
    """

    def __init__(self, k: int, monitor: str = "val_loss", mode: str = "min",
                 folder: str | os.PathLike | None = None):
        if k < 0:
            raise ValueError(f"Invalid value for the 'k' parameter: expected >= 0, got {k}.")
        self.k = int(k)
        self.monitor = monitor
        self.mode = check_option("mode", mode, ("min", "max"))
        self.folder = Path(folder) if folder is not None else None
        self.entries: list[tuple[float, int]] = []  # (value, epoch), best first

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def path_for(self, epoch: int) -> Path:
        """The file of ``epoch``."""
        if self.folder is None:
            raise ValueError("TopKCheckpoints.folder is not set.")
        return self.folder / f"epoch{epoch:03d}.pt"

    def would_keep(self, value: float) -> bool:
        """Whether ``value`` enters the best ``k``."""
        if self.k == 0 or value is None or not math.isfinite(float(value)):
            return False
        return len(self.entries) < self.k or self._better(float(value), self.entries[-1][0])

    def update(self, epoch: int, value: float,
               payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> Path | None:
        """Save ``payload`` for ``epoch`` if ``value`` is among the best ``k``.

        ``payload`` may be a callable so the state is only gathered when it is kept. Returns the
        path written, or ``None``.
        """
        if not self.would_keep(value):
            if value is not None and not math.isfinite(float(value)):
                logger.warning("Top-k: %s=%s at epoch %d is not finite; not kept.",
                               self.monitor, value, epoch)
            return None
        value = float(value)
        self.entries = [e for e in self.entries if e[1] != epoch]
        path = save_checkpoint(self.path_for(epoch), payload() if callable(payload) else payload)
        # Insert after equal values so earlier epochs win ties.
        pos = len(self.entries)
        for i, (v, _) in enumerate(self.entries):
            if self._better(value, v):
                pos = i
                break
        self.entries.insert(pos, (value, int(epoch)))
        for _, old_epoch in self.entries[self.k:]:
            self.path_for(old_epoch).unlink(missing_ok=True)
        self.entries = self.entries[:self.k]
        return path

    def best_paths(self) -> list[Path]:
        """Paths of the kept checkpoints, best first."""
        return [self.path_for(e) for _, e in self.entries]

    def best(self) -> tuple[float, int] | None:
        """``(value, epoch)`` of the best kept checkpoint."""
        return self.entries[0] if self.entries else None

    def prune_untracked(self) -> list[Path]:
        """Delete ``epoch*.pt`` files in the folder that the keeper does not track."""
        if self.folder is None or not self.folder.is_dir():
            return []
        keep = {p.name for p in self.best_paths()}
        removed = [p for p in self.folder.glob("epoch*.pt") if p.name not in keep]
        for p in removed:
            p.unlink(missing_ok=True)
        if removed:
            logger.info("Top-k: removed %d checkpoint(s) not tracked by this run from %s.",
                        len(removed), self.folder)
        return removed

    def state_dict(self) -> dict[str, Any]:
        """Plain state (for the resumable checkpoint)."""
        return {"k": self.k, "monitor": self.monitor, "mode": self.mode,
                "values": [v for v, _ in self.entries], "epochs": [e for _, e in self.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; entries whose file is missing are dropped."""
        entries = [(float(v), int(e)) for v, e in zip(state["values"], state["epochs"])]
        if self.folder is not None:
            entries = [en for en in entries if self.path_for(en[1]).is_file()]
        self.entries = entries[:self.k]
