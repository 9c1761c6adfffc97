"""Multi-horizon autoregressive forecasting with an expert-balancing term (Trace pre-training).

From the causal state at step ``t`` of every real channel, head ``h`` predicts patches
``t+1 .. t+h``; the loss of horizon ``h`` is the Huber loss (threshold ``delta``) averaged over
its valid positions ``t <= N - 1 - h`` and the real channels; the forecasting loss is the mean
over the horizons that have a valid position (**our default**: the weighting of eq. 16 is lost;
the mean keeps the loss scale of the horizon ablations comparable); ``loss = forecast + balance_weight * aux_loss``.

References
----------
.. [1] "Trace: Temporal Routing with Autoregressive Cross-channel Experts for EEG Representation
       Learning", Section 2.5, equations (15)-(18), Table 7.
.. [2] Huber, P. J. (1992). Robust Estimation of a Location Parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.utils import check_positive

__all__ = ["ForecastingObjective", "forecast_targets", "forecasting_loss"]


def forecast_targets(patches: Tensor, h: int) -> Tensor:
    """Targets of horizon ``h``: for ``t = 0 .. N-h-1`` the patches ``t+1 .. t+h``.

    ``patches`` (B, C, N, P) -> (B, C, N - h, h, P) (empty along the third axis if ``h >= N``).
    """
    B, C, N, P = patches.shape
    if h >= N:
        return patches.new_zeros(B, C, 0, h, P)
    return patches[:, :, 1:].unfold(2, h, 1).transpose(-1, -2)  # (B, C, N-h, P, h) -> (.., h, P)


def forecasting_loss(forecast: Mapping[int, Tensor], patches: Tensor,
                     ch_mask: Tensor | None = None, delta: float = 1.0
                     ) -> tuple[Tensor, dict[int, Tensor]]:
    """Multi-horizon Huber loss.

    Parameters
    ----------
    forecast : mapping
        ``{h: (B, C, N', h, P)}``, the prediction of patches ``t+1 .. t+h`` from steps
        ``t = 0 .. N'-1``; ``N' >= N - h`` (extra trailing steps, which have no target, are
        ignored).
    patches : Tensor, shape (B, C, N, P)
        The (scaled) input patches.
    ch_mask : BoolTensor, shape (B, C), optional
        Real channels; padding channels are left out.
    delta : float
        Huber threshold (**our default** 1.0).

    Returns
    -------
    loss : Tensor
        Mean of the per-horizon losses over the horizons with at least one valid position.
    per_horizon : dict
        ``{h: scalar}`` for those horizons.

    Raises
    ------
    ValueError
        When no horizon has a valid position (windows of fewer than ``min(h) + 1`` patches).
    """
    N = patches.shape[2]
    per_h: dict[int, Tensor] = {}
    for h, pred in sorted(forecast.items()):
        if h >= N:
            continue  # no target inside the window
        target = forecast_targets(patches, h)  # (B, C, N-h, h, P), a view
        pred = pred[:, :, : N - h]
        if ch_mask is not None:  # keep the real channels: (n_real, N-h, h, P)
            pred, target = pred[ch_mask], target[ch_mask]
        per_h[h] = F.huber_loss(pred.float(), target.float(), delta=delta)
    if not per_h:
        raise ValueError(f"forecasting_loss: windows of N={N} patches leave no target for the "
                         f"horizons {sorted(forecast)}; use windows of at least "
                         f"{min(forecast) + 1} patches.")
    return torch.stack(list(per_h.values())).mean(), per_h


class ForecastingObjective(nn.Module):
    """``loss, logs = objective(model, batch)`` for Trace pre-training.

    Calls ``model(x, ch_ids=..., rate_id=..., ch_mask=...)``, which must return ``forecast``
    (``{h: (B, C, N - h, h, P)}``), ``patches`` (B, C, N, P) and ``aux_loss``. Logs ``loss``,
    ``forecast``, ``balance`` (the unweighted balance loss) and ``h1``, ``h2``, ``h4`` ... (one
    per horizon; a horizon without a target in the window, ``h >= N``, is left out of the loss
    and of the logs of that batch).

    Parameters
    ----------
    delta : float
        Huber threshold (**our default** 1.0).
    balance_weight : float
        ``lambda`` of the expert-balancing loss (**our default** 0.01; 0 = the "without the
        balancing loss" ablation).

    References
    ----------
    .. [1] "Trace", Section 2.5, equation (18).
    """

    def __init__(self, delta: float = 1.0, balance_weight: float = 0.01) -> None:
        super().__init__()
        check_positive("delta", delta)
        check_positive("balance_weight", balance_weight, strict=False)
        self.delta, self.balance_weight = float(delta), float(balance_weight)

    def extra_repr(self) -> str:
        return f"delta={self.delta}, balance_weight={self.balance_weight}"

    def forward(self, model: nn.Module, batch: dict[str, Tensor]
                ) -> tuple[Tensor, dict[str, float]]:
        out = model(batch["x"], ch_ids=batch.get("ch_ids"), rate_id=batch.get("rate_id"),
                    ch_mask=batch.get("ch_mask"))
        missing = [k for k in ("forecast", "patches", "aux_loss") if k not in out]
        if missing:
            raise KeyError(f"ForecastingObjective needs a model returning {missing}; "
                           f"{type(model).__name__} returned {sorted(out)}.")
        ch_mask = batch.get("ch_mask")
        forecast, per_h = forecasting_loss(out["forecast"], out["patches"],
                                           None if ch_mask is None else ch_mask.bool(),
                                           self.delta)
        balance = out["aux_loss"].float()
        loss = forecast + self.balance_weight * balance
        logs = {"loss": float(loss.detach()), "forecast": float(forecast.detach()),
                "balance": float(balance.detach())}
        logs.update({f"h{h}": float(v.detach()) for h, v in per_h.items()})
        return loss, logs
