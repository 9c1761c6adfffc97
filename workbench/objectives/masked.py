"""Masked latent prediction + masked reconstruction (STELAR), with an EMA teacher.

``L = w_lat * L_lat + w_rec * L_rec`` over the masked patches of real channels:

- ``L_lat``: regression of the predictor output onto the teacher's layer-normed latents
  (smooth L1, **our default**, or MSE), averaged over masked tokens and features;
- ``L_rec``: mean squared error of the reconstructed raw patches, averaged over masked patches
  and samples.

The weights are fixed or set by MTPE-GB (:class:`~workbench.objectives.balancing.MTPEGB`) from
the Trainer's per-epoch ``val_lat`` and ``val_rec``. After every optimiser step the teacher
moves by EMA with a momentum on a cosine ramp from ``ema_start`` (0.996) to ``ema_end`` (1):
``m(s) = ema_end - (ema_end - ema_start) * (1 + cos(pi * s / S)) / 2``.

References
----------
.. [1] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Sections 2.2-2.3, Table 3.
.. [2] J.-B. Grill et al., "Bootstrap your own latent" (BYOL), NeurIPS 2020 (cosine EMA ramp).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.objectives.balancing import MTPEGB, RULES
from workbench.utils import check_option, get_logger

logger = get_logger("objectives")

__all__ = ["MaskedObjective", "ema_momentum", "masked_losses"]


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Cosine ramp of the EMA momentum: ``start`` at step 0, ``end`` at ``total_steps``."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return end - (end - start) * (1.0 + math.cos(math.pi * frac)) / 2.0


def masked_losses(out: Mapping[str, Tensor], latent_loss: str = "smooth_l1",
                  beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(L_lat, L_rec)`` from a masked model's outputs.

    Parameters
    ----------
    out : mapping
        ``pred``, ``target`` (B, C, P, d), ``recon``, ``signal`` (B, C, T) and ``mask``
        (B, C, P) (True = masked real patch), as :class:`~workbench.models.stelar.StelarPretrain`
        returns them.
    latent_loss : {"smooth_l1", "mse"}
        Loss of the latent regression.
    beta : float
        Smooth-L1 threshold.

    Returns
    -------
    lat, rec : Tensor
        Scalars, means over the masked patches (0 when nothing is masked).
    """
    check_option("latent_loss", latent_loss, ["smooth_l1", "mse"])
    mask = out["mask"]
    B, C, P = mask.shape
    pred, target = out["pred"].float(), out["target"].float()
    if latent_loss == "smooth_l1":
        per_tok = F.smooth_l1_loss(pred, target, reduction="none", beta=beta).mean(-1)
    else:
        per_tok = (pred - target).pow(2).mean(-1)  # (B, C, P)
    recon = out["recon"].float().reshape(B, C, P, -1)  # (B, C, P, patch_len)
    signal = out["signal"].float().reshape(B, C, P, -1)
    per_patch = (recon - signal).pow(2).mean(-1)  # (B, C, P)
    w = mask.to(per_tok.dtype)
    n = w.sum().clamp(min=1.0)
    return (per_tok * w).sum() / n, (per_patch * w).sum() / n


class MaskedObjective(nn.Module):
    """``loss, logs = objective(model, batch)`` for STELAR pre-training.

    Parameters
    ----------
    weighting : {"mtpe_gb", "fixed"}
        MTPE-GB weights (start 1/2, 1/2) or fixed ``w_lat`` / ``w_rec``.
    rule : {"proportional", "inverse"}
        MTPE-GB raw-weight rule (see :mod:`workbench.objectives.balancing`).
    smoothing : float
        MTPE-GB ``c`` (**our default** 0.5).
    u_min : float
        MTPE-GB progress floor (handles ``u_i <= 0``).
    w_lat, w_rec : float, optional
        Fixed weights; ``w_rec`` defaults to ``1 - w_lat`` (latent-only: ``w_lat=1``;
        reconstruction-only: ``w_lat=0``). Ignored by MTPE-GB.
    reference : {"first_batch", "first_epoch"}
        MTPE-GB's ``L^V(0)``: the losses of the first training batch, computed before the
        first optimiser step (the untrained model on unseen data; averaged over ranks under
        DDP), or the validation losses after epoch 1 (the first update then comes after
        epoch 2). :meth:`set_reference` sets it from a validation pass before training.
    latent_loss : {"smooth_l1", "mse"}
        Loss of the latent regression (**our default** smooth L1).
    beta : float
        Smooth-L1 threshold.
    ema_start, ema_end : float
        EMA momentum ramp (0.996 -> 1).
    val_seed : int
        In eval mode the masks come from a generator seeded with this value at every call, so
        every epoch's validation losses (MTPE-GB's input) use the same masks.

    Notes
    -----
    Logs ``loss``, ``lat``, ``rec`` (unweighted terms), ``w_lat``, ``w_rec``. Hooks:
    ``on_step_end`` moves the model's EMA teacher (``model.update_target``),
    ``on_epoch_end`` updates MTPE-GB from ``val_lat`` / ``val_rec``. Weights and reference are
    buffers of :attr:`balancer`, saved in the objective's ``state_dict``.

    References
    ----------
    .. [1] V.-C. Nguyen et al., STELAR, Section 2.2 and Algorithm 1.
    """

    tasks = ("lat", "rec")

    def __init__(self, weighting: str = "mtpe_gb", rule: str = "proportional",
                 smoothing: float = 0.5, u_min: float = 1e-3, w_lat: float | None = None,
                 w_rec: float | None = None, reference: str = "first_batch",
                 latent_loss: str = "smooth_l1", beta: float = 1.0, ema_start: float = 0.996,
                 ema_end: float = 1.0, val_seed: int = 0) -> None:
        super().__init__()
        self.weighting = check_option("weighting", weighting, ["mtpe_gb", "fixed"])
        check_option("rule", rule, RULES)
        self.reference = check_option("reference", reference, ["first_batch", "first_epoch"])
        self.latent_loss = check_option("latent_loss", latent_loss, ["smooth_l1", "mse"])
        if not 0.0 <= ema_start <= ema_end <= 1.0:
            raise ValueError(f"Invalid values for 'ema_start' and 'ema_end': expected "
                             f"0 <= ema_start <= ema_end <= 1, got {ema_start}, {ema_end}.")
        self.beta, self.ema_start, self.ema_end = float(beta), float(ema_start), float(ema_end)
        self.val_seed = int(val_seed)
        self.balancer: MTPEGB | None = None
        if weighting == "mtpe_gb":
            self.balancer = MTPEGB(self.tasks, smoothing, rule, u_min)
            fixed = (0.5, 0.5)
        else:
            lat = 0.5 if w_lat is None else float(w_lat)
            rec = 1.0 - lat if w_rec is None else float(w_rec)
            if lat < 0 or rec < 0 or lat + rec <= 0:
                raise ValueError(f"Invalid values for 'w_lat' and 'w_rec': expected >= 0 and not "
                                 f"both 0, got {lat}, {rec}.")
            fixed = (lat, rec)
        self.register_buffer("fixed_weights", torch.tensor(fixed, dtype=torch.float64))
        self._warned_no_val = False

    def extra_repr(self) -> str:
        return (f"weighting={self.weighting!r}, latent_loss={self.latent_loss!r}, "
                f"ema=({self.ema_start}, {self.ema_end})")

    def weights(self) -> tuple[float, float]:
        """Current ``(w_lat, w_rec)``."""
        w = self.balancer.weights if self.balancer is not None else self.fixed_weights
        return float(w[0]), float(w[1])

    def set_reference(self, losses: Mapping[str, float]) -> None:
        """Set MTPE-GB's ``L^V(0)`` from ``{"lat": ..., "rec": ...}`` (or ``val_``-prefixed)."""
        if self.balancer is not None:
            self.balancer.set_reference({t: losses.get(t, losses.get(f"val_{t}"))
                                         for t in self.tasks})

    def forward(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, dict]:
        gen = None
        if not self.training:  # the same validation masks every epoch
            gen = torch.Generator(device=batch["x"].device).manual_seed(self.val_seed)
        out = model(batch["x"], ch_ids=batch.get("ch_ids"), rate_id=batch.get("rate_id"),
                    ch_mask=batch.get("ch_mask"), generator=gen)
        lat, rec = masked_losses(out, self.latent_loss, self.beta)
        if (self.training and self.balancer is not None and self.reference == "first_batch"
                and not self.balancer.has_reference):
            ref = torch.stack([lat.detach(), rec.detach()]).double()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(ref)
                ref /= dist.get_world_size()
            self.balancer.set_reference(dict(zip(self.tasks, ref.tolist())))
        w_lat, w_rec = self.weights()
        loss = w_lat * lat + w_rec * rec
        return loss, {"loss": float(loss.detach()), "lat": float(lat.detach()),
                      "rec": float(rec.detach()), "w_lat": w_lat, "w_rec": w_rec}

    def on_step_end(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Move the EMA teacher with the momentum of this step."""
        update = getattr(model, "update_target", None)
        if callable(update):
            update(ema_momentum(step, total_steps, self.ema_start, self.ema_end))

    def on_epoch_end(self, model: nn.Module, epoch: int, val_logs: Mapping[str, float]) -> None:
        """MTPE-GB update from this epoch's ``val_lat`` and ``val_rec``."""
        if self.balancer is None:
            return
        keys = [f"val_{t}" for t in self.tasks]
        if not all(k in val_logs for k in keys):
            if not self._warned_no_val:
                logger.warning("MTPE-GB needs %s from a validation loader; got %s. The weights "
                               "stay at %s.", keys, sorted(val_logs), self.weights())
                self._warned_no_val = True
            return
        w = self.balancer.update({t: val_logs[f"val_{t}"] for t in self.tasks})
        logger.info("MTPE-GB after epoch %d: w_lat=%.4f, w_rec=%.4f", epoch, w["lat"], w["rec"])
