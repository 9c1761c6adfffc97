"""Probes on frozen features: forward-hook capture, per-channel statistics, linear and MLP.

Model-agnostic: :class:`HookFeatures` takes any ``nn.Module`` and a dotted layer name, the
probes take arrays. EEGM2's protocols are built from these pieces:

* EEGM2 (Linear): hook an encoder layer -> :func:`channel_statistics` -> :func:`linear_probe`
  (standardise + one-vs-rest logistic regression).
* EEGM2 (Light): the same features -> :func:`mlp_probe` (two hidden layers).

References
----------
.. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2: An efficient mamba-2-based self-supervised
   framework for long-sequence EEG modeling", arXiv:2502.17873, 2025, Sections II-A and II-D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.windowing import check_finite_windows

logger = logging.getLogger("workbench")

__all__ = ["STATISTICS", "HookFeatures", "ProbeResult", "channel_statistics", "linear_probe",
           "mlp_probe"]

#: The nine per-channel temporal statistics, in output order.
STATISTICS = ("min", "max", "mean", "std", "q05", "q25", "q50", "q75", "q95")
_QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)


class HookFeatures:
    """Capture the output of one sub-module with a forward hook.

    Use as a context manager; the hook is removed on exit. Every forward call appends the
    (detached) output to :attr:`outputs`; :attr:`output` is the last one.

    Parameters
    ----------
    model : nn.Module
        Any model.
    layer_name : str
        Dotted name of the sub-module, as in ``dict(model.named_modules())`` (e.g.
        ``"encoder3"`` or ``"encoder1.1"``).
    to_cpu : bool
        Move captured tensors to the CPU (keeps GPU memory flat over a data set).

    Examples
    --------
    >>> with HookFeatures(model, "encoder3") as hook:
    ...     model(x)
    >>> feats = hook.output  # (B, C', T') for a Conv1d layer
    """

    def __init__(self, model: nn.Module, layer_name: str, to_cpu: bool = True) -> None:
        modules = dict(model.named_modules())
        if layer_name not in modules:
            names = [n for n in modules if n]
            raise ValueError(f"Invalid value for the 'layer_name' parameter: {layer_name!r} is "
                             f"not a sub-module of {type(model).__name__}; available: "
                             f"{names[:40]}{' ...' if len(names) > 40 else ''}.")
        self.module = modules[layer_name]
        self.layer_name, self.to_cpu = layer_name, to_cpu
        self.outputs: list[torch.Tensor] = []
        self._handle = None

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        elif isinstance(output, dict):
            output = next(iter(output.values()))
        out = output.detach()
        self.outputs.append(out.cpu() if self.to_cpu else out)

    def __enter__(self) -> HookFeatures:
        self.outputs = []
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def output(self) -> torch.Tensor:
        """The output of the last forward call."""
        if not self.outputs:
            raise RuntimeError(f"No forward call reached layer {self.layer_name!r} yet.")
        return self.outputs[-1]

    def concat(self) -> torch.Tensor:
        """All captured outputs concatenated along the batch axis."""
        if not self.outputs:
            raise RuntimeError(f"No forward call reached layer {self.layer_name!r} yet.")
        return torch.cat(self.outputs, dim=0)


def channel_statistics(feats: Any, time_axis: int = -1, flatten: bool = True) -> np.ndarray:
    """Nine temporal statistics per channel: min, max, mean, std, q05, q25, q50, q75, q95.

    Parameters
    ----------
    feats : ndarray or Tensor, shape (B, C, T)
        Hidden features; ``time_axis`` says which axis is time (use ``time_axis=1`` for a
        (B, T, C) layer output).
    time_axis : int
        The time axis (1 or 2, or -1 for the last).
    flatten : bool
        Return (B, C * 9) (channel-major: the nine statistics of channel 0 first) instead of
        (B, C, 9).

    Returns
    -------
    stats : ndarray, float32
        ``std`` is the population standard deviation (``ddof=0``); quantiles interpolate
        linearly.
    """
    a = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if a.ndim != 3:
        raise ValueError(f"Invalid shape for 'feats': expected (batch, channels, time), got "
                         f"{a.shape}.")
    a = np.moveaxis(a, time_axis, -1).astype(np.float64)  # (B, C, T)
    check_finite_windows(a, "feats")
    q = np.quantile(a, _QUANTILES, axis=-1)  # (5, B, C)
    stats = np.stack([a.min(-1), a.max(-1), a.mean(-1), a.std(-1), *q], axis=-1)  # (B, C, 9)
    stats = stats.astype(np.float32)
    return stats.reshape(stats.shape[0], -1) if flatten else stats


@dataclass
class ProbeResult:
    """Predictions of a probe on the test set.

    Attributes
    ----------
    proba : ndarray, shape (n_test, n_classes)
        Class probabilities, columns in the order of ``classes``.
    classes : ndarray
        The class labels seen in training.
    estimator : Any
        The fitted scikit-learn pipeline.
    metrics : dict
        ``workbench.evaluation.metrics.classification_metrics`` when ``test_y`` was given.
    """

    proba: np.ndarray
    classes: np.ndarray
    estimator: Any
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def pred(self) -> np.ndarray:
        return self.classes[np.argmax(self.proba, axis=1)]


def _fit_probe(estimator: Any, train_X: Any, train_y: Any, test_X: Any, test_y: Any,
               sample_weight: str | None = None) -> ProbeResult:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr = np.asarray(train_X, dtype=np.float64).reshape(len(train_X), -1)
    Xte = np.asarray(test_X, dtype=np.float64).reshape(len(test_X), -1)
    ytr = np.asarray(train_y).ravel()
    if Xtr.shape[0] != ytr.shape[0]:
        raise ValueError(f"Invalid value for 'train_y': {ytr.shape[0]} labels for "
                         f"{Xtr.shape[0]} training rows.")
    if Xte.shape[1] != Xtr.shape[1]:
        raise ValueError(f"Invalid shape for 'test_X': {Xte.shape[1]} features, the training "
                         f"set has {Xtr.shape[1]}.")
    if np.unique(ytr).size < 2:
        raise ValueError(f"Invalid value for 'train_y': a probe needs at least two classes, "
                         f"got {np.unique(ytr).tolist()}.")
    fit_kw = {}
    if sample_weight is not None:  # estimators without class_weight (the MLP) get sample weights
        from sklearn.utils.class_weight import compute_sample_weight

        step = type(estimator).__name__.lower()
        fit_kw[f"{step}__sample_weight"] = compute_sample_weight(sample_weight, ytr)
    pipe = make_pipeline(StandardScaler(), estimator).fit(Xtr, ytr, **fit_kw)
    proba = pipe.predict_proba(Xte)
    classes = pipe.classes_
    metrics: dict[str, float] = {}
    if test_y is not None:
        from workbench.evaluation.metrics import classification_metrics

        metrics = classification_metrics(np.asarray(test_y).ravel(), proba,
                                         labels=classes.tolist())
    return ProbeResult(proba=proba, classes=classes, estimator=pipe, metrics=metrics)


def linear_probe(train_X: Any, train_y: Any, test_X: Any, test_y: Any = None, C: float = 1.0,
                 max_iter: int = 2000, random_state: int = 0,
                 class_weight: str | None = "balanced") -> ProbeResult:
    """Standardise, then one-vs-rest logistic regression (EEGM2 Linear).

    Parameters
    ----------
    train_X, test_X : array, shape (n, ...)
        Features (flattened per row).
    train_y, test_y : array, shape (n,)
        Labels; ``test_y`` is optional and only used for ``metrics``.
    C : float
        Inverse L2 regularisation strength.
    max_iter : int
        Solver iterations.
    random_state : int
        Seed.
    class_weight : "balanced" or None
        ``"balanced"`` (default) weights each one-vs-rest problem so that both sides count
        equally (a minority class is not ignored on imbalanced labels); None: unweighted.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    _check_class_weight(class_weight)
    est = OneVsRestClassifier(LogisticRegression(C=C, max_iter=max_iter,
                                                 random_state=random_state,
                                                 class_weight=class_weight))
    return _fit_probe(est, train_X, train_y, test_X, test_y)


def _check_class_weight(class_weight: str | None) -> None:
    if class_weight not in ("balanced", None):
        raise ValueError(f"Invalid value for the 'class_weight' parameter: expected 'balanced' "
                         f"or None, got {class_weight!r}.")


def mlp_probe(train_X: Any, train_y: Any, test_X: Any, test_y: Any = None,
              hidden: tuple[int, int] = (128, 64), alpha: float = 1e-4, max_iter: int = 500,
              random_state: int = 0, class_weight: str | None = "balanced") -> ProbeResult:
    """Standardise, then an MLP with two hidden layers (EEGM2 Light).

    Parameters
    ----------
    train_X, train_y, test_X, test_y
        As for :func:`linear_probe`.
    hidden : tuple of two int
        Widths of the two hidden layers (ReLU).
    alpha : float
        L2 penalty.
    max_iter : int
        Adam epochs.
    random_state : int
        Seed (weights and batching).
    class_weight : "balanced" or None
        ``"balanced"`` (default): per-sample weights ``n / (n_classes * n_c)`` in the loss
        (``MLPClassifier`` has no ``class_weight``); None: unweighted.
    """
    from sklearn.neural_network import MLPClassifier

    if len(hidden) != 2:
        raise ValueError(f"Invalid value for the 'hidden' parameter: expected two hidden "
                         f"widths, got {hidden!r}.")
    _check_class_weight(class_weight)
    est = MLPClassifier(hidden_layer_sizes=tuple(hidden), alpha=alpha, max_iter=max_iter,
                        random_state=random_state)
    return _fit_probe(est, train_X, train_y, test_X, test_y, sample_weight=class_weight)
