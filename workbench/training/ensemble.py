"""Class probabilities of a model over a loader, and checkpoint ensembling.

One Model for All evaluates by checkpoint ensembling: the top-5 checkpoints by validation
accuracy each predict class probabilities (softmax of the logits) and their mean is the
ensemble's prediction.

References
----------
.. [1] "One Model for All: Universal Pre-training for EEG Classification" (the workbench's
   method 1): top-5 checkpoint ensembling of fine-tuned classifiers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import get_device
from .checkpoints import build_model_from_checkpoint, load_checkpoint
from .distributed import unwrap_model

_MODEL_KWARGS = ("ch_ids", "rate_id", "ch_mask")


def _resolve(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else get_device(device)


@torch.no_grad()
def predict_proba(model: nn.Module, loader: Iterable[Mapping[str, Any]],
                  device: str | torch.device = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax probabilities of ``model(...)["logits"]`` over every batch of ``loader``.

    The model is called as ``model(x, ch_ids=..., rate_id=..., ch_mask=...)`` with the keys the
    batch has, in eval mode (its mode is restored afterwards) and moved to ``device``.

    Returns
    -------
    probs : ndarray, shape (N, K), float64
    y : ndarray, shape (N,), int64
        ``batch["y"]`` (-1 where a batch has no labels).
    index : ndarray, shape (N,), int64
        ``batch["index"]`` (window ids), else positions 0..N-1 in loader order.
    """
    dev = _resolve(device)
    model = unwrap_model(model).to(dev)
    was_training = model.training
    model.eval()
    probs, ys, idx = [], [], []
    seen = 0
    try:
        for batch in loader:
            x = batch["x"].to(dev)
            kwargs = {k: batch[k].to(dev) for k in _MODEL_KWARGS if k in batch}
            out = model(x, **kwargs)
            if not isinstance(out, Mapping) or "logits" not in out:
                keys = sorted(out) if isinstance(out, Mapping) else type(out).__name__
                raise ValueError(f"predict_proba needs model outputs with a 'logits' entry, got "
                                 f"{keys}.")
            logits = out["logits"].float()  # (B, K)
            probs.append(torch.softmax(logits, dim=-1).double().cpu().numpy())
            b = x.shape[0]
            ys.append(batch["y"].cpu().numpy().astype(np.int64) if "y" in batch
                      else np.full(b, -1, dtype=np.int64))
            idx.append(batch["index"].cpu().numpy().astype(np.int64) if "index" in batch
                       else np.arange(seen, seen + b, dtype=np.int64))
            seen += b
    finally:
        model.train(was_training)
    if not probs:
        raise ValueError("predict_proba got an empty loader.")
    return np.concatenate(probs), np.concatenate(ys), np.concatenate(idx)


def ensemble_predict_proba(model: nn.Module | None,
                           checkpoint_paths: Sequence[str | os.PathLike],
                           loader: Iterable[Mapping[str, Any]],
                           device: str | torch.device = "auto",
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean softmax probabilities of the checkpoints in ``checkpoint_paths``.

    Parameters
    ----------
    model : nn.Module or None
        A model of the right architecture; each checkpoint's ``model`` weights are loaded into it
        in turn and its own weights are restored at the end. ``None`` rebuilds it from the first
        checkpoint's ``model_spec``.
    checkpoint_paths : sequence of path
        E.g. ``trainer.top_k.best_paths()``.
    loader : iterable of batch dicts
        Must yield the windows in the same order every time (no shuffling).
    device : str or torch.device

    Returns
    -------
    probs : ndarray, shape (N, K)
        Mean over checkpoints of the softmax probabilities.
    y, index : ndarray, shape (N,)
        As in :func:`predict_proba`.
    """
    paths = list(checkpoint_paths)
    if not paths:
        raise ValueError("Invalid value for the 'checkpoint_paths' parameter: expected at least "
                         "one checkpoint, got none.")
    dev = _resolve(device)
    if model is None:
        model = build_model_from_checkpoint(paths[0], map_location=dev)
    model = unwrap_model(model)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    total = y = index = None
    try:
        for path in paths:
            model.load_state_dict(load_checkpoint(path, map_location="cpu")["model"])
            p, y_i, idx_i = predict_proba(model, loader, dev)
            if total is None:
                total, y, index = p, y_i, idx_i
                continue
            if p.shape != total.shape or not np.array_equal(idx_i, index):
                raise ValueError(f"Checkpoint {path}: the loader yielded other windows or another "
                                 "order than for the first checkpoint; use a loader without "
                                 "shuffling for ensembling.")
            total = total + p
    finally:
        model.load_state_dict(original)
    assert total is not None and y is not None and index is not None
    return total / len(paths), y, index
