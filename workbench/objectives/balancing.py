"""MTPE-GB: validation-driven weights of the loss terms of a multi-task objective.

Algorithm 1 of STELAR, for ``k`` tasks with validation losses ``L_i^V``:

1. ``w_i(0) = 1 / k``; ``L_i^V(0)`` is the loss of the untrained model (the reference).
2. After each epoch ``t``: progress ``u_i(t) = (L_i^V(0) - L_i^V(t)) / L_i^V(0)``.
3. Raw weights ``w_bar_i``, normalised to sum 1. The printed rule,
   ``w_bar_i = (sum_j 1/u_j) / (1/u_i)``, is proportional to ``u_i`` once normalised
   (``rule="proportional"``, the default: the task that progressed most gets more weight). The
   prose ("balancing", the easier task "dominates") suggests the inverse, proportional to
   ``1/u_i`` (``rule="inverse"``: the task that lags gets more weight).
4. Smoothing: ``w(t+1) = c * w_bar(t+1) + (1 - c) * w(t)`` (``c`` not given: **our default**
   0.5).

No progress (``u_i <= 0``: the validation loss did not fall below the reference) would give a
zero, negative or infinite raw weight. We clamp ``u_i`` to ``u_min`` (**our default** 1e-3)
before either rule: under the printed rule such a task gets a raw weight near 0 (it is not
learning, so it gets little), under the inverse rule a raw weight near 1 (it lags most); when
every task has ``u_i <= u_min`` the raw weights are uniform (1/k).

References
----------
.. [1] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Section 2.3, Algorithm 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from workbench.utils import check_option

__all__ = ["RULES", "MTPEGB", "mtpe_gb_step"]

RULES = ("proportional", "inverse")


def mtpe_gb_step(weights: Tensor, reference: Tensor, losses: Tensor, smoothing: float = 0.5,
                 rule: str = "proportional", u_min: float = 1e-3
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """One MTPE-GB update.

    Parameters
    ----------
    weights : Tensor, shape (k,)
        Current weights ``w(t)`` (sum 1).
    reference : Tensor, shape (k,)
        Reference validation losses ``L^V(0)`` (> 0).
    losses : Tensor, shape (k,)
        Validation losses of this epoch ``L^V(t)``.
    smoothing : float
        ``c`` in [0, 1].
    rule : {"proportional", "inverse"}
        Raw weights proportional to ``u_i`` (the printed Algorithm 1) or to ``1 / u_i``.
    u_min : float
        Floor of the progress ``u_i`` (> 0), see the module docstring.

    Returns
    -------
    new_weights, raw, progress : Tensor, shape (k,)
        ``w(t+1)``, ``w_bar(t+1)`` and the unclamped ``u(t)``.
    """
    check_option("rule", rule, RULES)
    progress = (reference - losses) / reference  # u_i(t)
    u = progress.clamp(min=u_min)
    score = u if rule == "proportional" else 1.0 / u
    raw = score / score.sum()
    return smoothing * raw + (1.0 - smoothing) * weights, raw, progress


class MTPEGB(nn.Module):
    """Task weights updated by MTPE-GB from per-epoch validation losses.

    Parameters
    ----------
    tasks : sequence of str
        Task names, e.g. ``("lat", "rec")``; losses are given as ``{name: value}``.
    smoothing : float
        ``c`` of Algorithm 1 (**our default** 0.5).
    rule : {"proportional", "inverse"}
        The printed rule (default) or its inverse (see the module docstring).
    u_min : float
        Floor of the progress (handles ``u_i <= 0``).

    Attributes
    ----------
    weights : Tensor, shape (k,), float64 buffer
        Current weights, saved in ``state_dict`` (checkpoints resume them exactly).
    reference : Tensor, shape (k,), float64 buffer
        ``L^V(0)``; NaN until :meth:`set_reference` (or the first :meth:`update`) sets it.
    n_updates : Tensor, int64 buffer
        Updates applied so far.

    References
    ----------
    .. [1] V.-C. Nguyen et al., STELAR, Algorithm 1.
    """

    def __init__(self, tasks: Sequence[str] = ("lat", "rec"), smoothing: float = 0.5,
                 rule: str = "proportional", u_min: float = 1e-3) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        if len(self.tasks) < 1 or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"Invalid value for the 'tasks' parameter: expected distinct task "
                             f"names, got {tasks!r}.")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"Invalid value for the 'smoothing' parameter: expected c in "
                             f"[0, 1], got {smoothing!r}.")
        if not u_min > 0:
            raise ValueError(f"Invalid value for the 'u_min' parameter: expected > 0, got "
                             f"{u_min!r}.")
        self.smoothing, self.u_min = float(smoothing), float(u_min)
        self.rule = check_option("rule", rule, RULES)
        k = len(self.tasks)
        self.register_buffer("weights", torch.full((k,), 1.0 / k, dtype=torch.float64))
        self.register_buffer("reference", torch.full((k,), math.nan, dtype=torch.float64))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, smoothing={self.smoothing}, rule={self.rule!r}"

    @property
    def has_reference(self) -> bool:
        """Whether ``L^V(0)`` is set."""
        return not bool(torch.isnan(self.reference).any())

    def as_dict(self) -> dict[str, float]:
        """Current weights by task name."""
        return {t: float(w) for t, w in zip(self.tasks, self.weights)}

    def _vector(self, losses: Mapping[str, float]) -> Tensor:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"MTPE-GB needs a loss for every task {list(self.tasks)}; missing "
                           f"{missing} in {sorted(losses)}.")
        vals = [float(losses[t]) for t in self.tasks]
        bad = {t: v for t, v in zip(self.tasks, vals) if not math.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"MTPE-GB: task losses must be finite and >= 0, got {bad}.")
        return torch.tensor(vals, dtype=torch.float64, device=self.weights.device)

    def set_reference(self, losses: Mapping[str, float]) -> None:
        """Set ``L^V(0)`` (the losses of the untrained model), e.g. from a validation pass
        before training; every reference loss must be > 0."""
        ref = self._vector(losses)
        if bool((ref <= 0).any()):
            raise ValueError(f"MTPE-GB: reference losses must be > 0 (the progress divides by "
                             f"them), got {dict(zip(self.tasks, ref.tolist()))}.")
        self.reference.copy_(ref)

    def update(self, losses: Mapping[str, float]) -> dict[str, float]:
        """Apply one update from this epoch's validation ``losses``; return the new weights.

        Without a reference, ``losses`` become the reference and the weights stay.
        """
        if not self.has_reference:
            self.set_reference(losses)
            return self.as_dict()
        new, _, _ = mtpe_gb_step(self.weights, self.reference, self._vector(losses),
                                 self.smoothing, self.rule, self.u_min)
        self.weights.copy_(new)
        self.n_updates += 1
        return self.as_dict()
