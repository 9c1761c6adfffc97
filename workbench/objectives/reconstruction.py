"""Reconstruction pre-training: temporal L1 plus a spectral (rFFT) term, as in EEGM2.

``loss = l1_weight * mean|x - x_hat| + spectral_weight * mean|rFFT(x) - rFFT(x_hat)|^2``,
the FFT taken along time and the squared modulus of the complex difference averaged over
batch, channels and frequency bins. No masking: the model reconstructs its whole input.

References
----------
.. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2: An efficient mamba-2-based self-supervised
   framework for long-sequence EEG modeling", arXiv:2502.17873, 2025, Eq. (1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from workbench.utils import check_positive

__all__ = ["ReconstructionObjective", "percentile_scale", "reconstruction_loss"]


def reconstruction_loss(x: Tensor, x_hat: Tensor, l1_weight: float = 1.0,
                        spectral_weight: float = 1.0, ch_mask: Tensor | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted L1 + spectral loss between ``x`` and ``x_hat`` (both (B, C, T)).

    Parameters
    ----------
    x, x_hat : Tensor, shape (B, C, T)
        Target and reconstruction.
    l1_weight, spectral_weight : float
        Weights of the two terms (EEGM2: 1 and 1; the S2 ablation: 1 and 0).
    ch_mask : Tensor of bool, shape (B, C), optional
        Real channels (False = padding in mixed-montage batches); padded channels are left out
        of both means.

    Returns
    -------
    loss, l1, spectral : Tensor
        Scalars; ``l1`` and ``spectral`` unweighted.
    """
    if x.shape != x_hat.shape or x.dim() != 3:
        raise ValueError(f"Invalid shapes for the reconstruction loss: expected two equal "
                         f"(batch, channels, time) tensors, got {tuple(x.shape)} and "
                         f"{tuple(x_hat.shape)}.")
    x, x_hat = x.float(), x_hat.float()  # FFTs of half-precision inputs are inaccurate
    abs_err = (x - x_hat).abs()  # (B, C, T)
    spec_err = (torch.fft.rfft(x, dim=-1) - torch.fft.rfft(x_hat, dim=-1)).abs().pow(2)
    if ch_mask is None:
        l1, spectral = abs_err.mean(), spec_err.mean()
    else:
        if tuple(ch_mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"Invalid shape for 'ch_mask': expected {tuple(x.shape[:2])}, got "
                             f"{tuple(ch_mask.shape)}.")
        w = ch_mask.to(x.dtype)[..., None]  # (B, C, 1)
        n_ch = w.sum().clamp(min=1.0)
        l1 = (abs_err * w).sum() / (n_ch * x.shape[-1])
        spectral = (spec_err * w).sum() / (n_ch * spec_err.shape[-1])
    return l1_weight * l1 + spectral_weight * spectral, l1, spectral


class ReconstructionObjective(nn.Module):
    """``loss, logs = objective(model, batch)`` for reconstruction pre-training (EEGM2).

    Calls ``model(batch["x"], ch_ids=..., rate_id=..., ch_mask=...)`` and compares its
    ``recon`` output with ``batch["x"]`` by :func:`reconstruction_loss`. Logs ``loss``, ``l1``
    and ``spectral`` (the unweighted terms).

    Parameters
    ----------
    l1_weight : float
        Weight of the temporal L1 term.
    spectral_weight : float
        Weight of the spectral term (0 for the S2 ablation, "L1 only").

    References
    ----------
    .. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2", arXiv:2502.17873, 2025, Eq. (1).
    """

    def __init__(self, l1_weight: float = 1.0, spectral_weight: float = 1.0) -> None:
        super().__init__()
        check_positive("l1_weight", l1_weight, strict=False)
        check_positive("spectral_weight", spectral_weight, strict=False)
        if l1_weight == 0 and spectral_weight == 0:
            raise ValueError("Invalid values for 'l1_weight' and 'spectral_weight': at least "
                             "one must be > 0.")
        self.l1_weight, self.spectral_weight = float(l1_weight), float(spectral_weight)

    def extra_repr(self) -> str:
        return f"l1_weight={self.l1_weight}, spectral_weight={self.spectral_weight}"

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = batch["x"]
        out = model(x, ch_ids=batch.get("ch_ids"), rate_id=batch.get("rate_id"),
                    ch_mask=batch.get("ch_mask"))
        if "recon" not in out:
            raise KeyError(f"ReconstructionObjective needs a model returning 'recon'; "
                           f"{type(model).__name__} returned {sorted(out)}.")
        loss, l1, spectral = reconstruction_loss(x, out["recon"], self.l1_weight,
                                                 self.spectral_weight, batch.get("ch_mask"))
        # 0-d tensors: the Trainer reads them at log intervals, no host sync per step
        return loss, {"loss": loss.detach(), "l1": l1.detach(), "spectral": spectral.detach()}


def percentile_scale(x: Any, q: float = 95.0, eps: float = 1e-12, return_scale: bool = False):
    """Scale every channel by the ``q``-th percentile of its absolute value (EEGM2's scaling).

    Parameters
    ----------
    x : ndarray or Tensor, shape (..., C, T)
        Signals; the percentile is taken along the last (time) axis, separately for every
        leading index and channel.
    q : float
        Percentile in [0, 100] (linear interpolation, as ``numpy.percentile``).
    eps : float
        Channels whose percentile is below ``eps`` (flat signals) are left unscaled.
    return_scale : bool
        Also return the scale, shape (..., C, 1).

    Returns
    -------
    scaled : same type as ``x``
    scale : same type as ``x``
        Only when ``return_scale``.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"Invalid value for the 'q' parameter: expected a percentile in "
                         f"[0, 100], got {q!r}.")
    if isinstance(x, Tensor):
        # torch.quantile refuses large inputs; a sort along time does any size.
        s, _ = torch.sort(x.abs(), dim=-1)
        pos = q / 100.0 * (s.shape[-1] - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        hi = min(lo + 1, s.shape[-1] - 1)
        scale = s[..., lo:lo + 1] + (s[..., hi:hi + 1] - s[..., lo:lo + 1]) * frac  # (..., C, 1)
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))
    else:
        x = np.asarray(x)
        scale = np.percentile(np.abs(x), q, axis=-1, keepdims=True)  # (..., C, 1)
        scale = np.where(scale > eps, scale, 1.0).astype(x.dtype if x.dtype.kind == "f"
                                                         else np.float64)
    scaled = x / scale
    return (scaled, scale) if return_scale else scaled
