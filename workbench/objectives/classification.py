"""Supervised classification objective (cross entropy on ``model(...)["logits"]``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationObjective"]


class ClassificationObjective(nn.Module):
    """Cross entropy between ``model(...)["logits"]`` and ``batch["y"]``.

    ``loss, logs = objective(model, batch)`` passes ``x`` and, when present, ``ch_ids``,
    ``rate_id`` and ``ch_mask`` to the model. Windows labelled ``-1`` (unlabelled) are ignored.
    Logs ``loss`` and ``acc`` (accuracy over the labelled windows).

    Parameters
    ----------
    label_smoothing : float
        Label smoothing of the cross entropy (0 = none).
    class_weight : sequence of float, optional
        A weight per class (e.g. ``n / (K * n_k)``, "balanced", for imbalanced classes); the
        loss is the weighted mean over the labelled windows, as ``F.cross_entropy``'s.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weight=None):
        super().__init__()
        if class_weight is not None:
            w = torch.as_tensor(class_weight, dtype=torch.float32)
            if w.ndim != 1 or not bool((w > 0).all()):
                raise ValueError(f"Invalid value for the 'class_weight' parameter: expected one "
                                 f"positive weight per class, got {class_weight!r}.")
            self.register_buffer("class_weight", w)
        else:
            self.class_weight = None
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"Invalid value for the 'label_smoothing' parameter: expected a "
                f"value in [0, 1), got {label_smoothing!r}."
            )
        self.label_smoothing = label_smoothing

    def forward(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(
            batch["x"],
            ch_ids=batch.get("ch_ids"),
            rate_id=batch.get("rate_id"),
            ch_mask=batch.get("ch_mask"),
        )
        logits, y = out["logits"], batch["y"]
        labelled = y >= 0
        n = labelled.sum().clamp(min=1)  # a batch without labels gives loss 0, not NaN
        per_window = F.cross_entropy(
            logits.float(),
            y,
            weight=self.class_weight,
            ignore_index=-1,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )  # (B,), 0 if y = -1; times the weight of the window's class when weighted
        if self.class_weight is None:
            loss = per_window.sum() / n
        else:  # weighted mean: sum_i w_{y_i} l_i / sum_i w_{y_i}
            loss = per_window.sum() / self.class_weight[y.clamp(min=0)][labelled].sum().clamp(
                min=1e-12)
        with torch.no_grad():
            acc = ((logits.argmax(1) == y) & labelled).sum() / n
        return loss, {"loss": loss.detach(), "acc": acc}  # 0-d tensors: no host sync
