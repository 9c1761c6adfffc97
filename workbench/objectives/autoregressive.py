"""Next-token pre-training of EEGPT, and the masked-autoencoding comparison on the same backbone.

``mode="ar"`` (the paper): from the tokens ``<= t`` of an electrode the model predicts the raw
samples of second ``t + 1``; the loss is their mean squared error,
``L = 1/T sum_t (x_t - x_hat_t)^2``, averaged over the real electrodes, the ``N - 1`` predicted
seconds and their samples.

``mode="mae"`` (the paper's MAE comparison): bidirectional attention, ``round(mask_ratio * N)``
random seconds of every electrode replaced by a learned mask token, MSE on the masked seconds.

The mode is the pre-training model's own config field (``create_model("eegpt", mode="mae")``):
it decides the attention mask of the backbone, which a classifier built from the same fields
inherits, so one switch sets both and they cannot disagree.

References
----------
.. [1] Yue, T. et al. (2024). EEGPT: Unleashing the Potential of EEG Generalist Foundation Model
       by Autoregressive Pre-training. arXiv:2410.19779, Section 3.1 (loss) and Table 4 (AR vs
       MAE).
.. [2] He, K. et al. (2022). Masked Autoencoders Are Scalable Vision Learners. CVPR.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workbench.training.distributed import unwrap_model

__all__ = ["AutoregressiveObjective", "masked_mse", "random_token_mask"]


def random_token_mask(B: int, C: int, N: int, mask_ratio: float,
                      device: torch.device | str | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """Bool (B, C, N): exactly ``clamp(round(mask_ratio * N), 1, N)`` True per electrode."""
    n_mask = min(max(round(mask_ratio * N), 1), N)
    order = torch.rand(B, C, N, device=device, generator=generator).argsort(dim=-1)
    return order < n_mask  # the ranks of a random permutation: n_mask of them are < n_mask


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean of ``(pred - target)^2`` (..., L) over the positions where ``weight`` (...) is set
    and their ``L`` samples."""
    w = weight.to(pred.dtype)[..., None]
    err = (pred.float() - target.float()).pow(2) * w  # (..., L)
    return err.sum() / (w.sum() * pred.shape[-1]).clamp(min=1.0)


class AutoregressiveObjective(nn.Module):
    """``loss, logs = objective(model, batch)`` for an :class:`~workbench.models.eegpt.EEGPT`.

    Logs ``loss`` and ``mse`` (the one term; equal to the loss).

    Parameters
    ----------
    mask_ratio : float or None
        Share of masked seconds in ``mode="mae"``; None takes the model's ``mask_ratio``.

    References
    ----------
    .. [1] Yue, T. et al. (2024). arXiv:2410.19779, Section 3.1.
    """

    def __init__(self, mask_ratio: float | None = None):
        super().__init__()
        if mask_ratio is not None and not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"Invalid 'mask_ratio': expected a value in (0, 1), got {mask_ratio}.")
        self.mask_ratio = mask_ratio

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}"

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        net = unwrap_model(model)
        mode = getattr(net, "mode", None)
        if mode not in ("ar", "mae"):
            raise ValueError(f"AutoregressiveObjective needs an EEGPT model (mode 'ar' or "
                             f"'mae'); {type(net).__name__} has mode {mode!r}.")
        x, ch_mask = batch["x"], batch.get("ch_mask")
        kw = {"ch_ids": batch.get("ch_ids"), "rate_id": batch.get("rate_id"), "ch_mask": ch_mask}
        B, C, T = x.shape
        real = (torch.ones(B, C, dtype=torch.bool, device=x.device) if ch_mask is None
                else ch_mask.to(torch.bool))  # (B, C)
        if mode == "ar":
            out = model(x, **kw)
            N = out["pred"].shape[2]
            if N < 2:
                raise ValueError(f"Next-token prediction needs windows of at least 2 tokens; "
                                 f"a window of T={T} samples gives {N}.")
            weight = real[..., None].expand(B, C, N - 1)
            mse = masked_mse(out["pred"][:, :, :-1], out["patches"][:, :, 1:], weight)
        else:
            N = T // net.encoder.token_length(T, kw["rate_id"])
            ratio = self.mask_ratio if self.mask_ratio is not None else net.mask_ratio
            mask = random_token_mask(B, C, N, ratio, device=x.device)  # (B, C, N)
            out = model(x, token_mask=mask, **kw)
            mse = masked_mse(out["pred"], out["patches"], mask & real[..., None])
        return mse, {"loss": float(mse.detach()), "mse": float(mse.detach())}
