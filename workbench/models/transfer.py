"""Moving pre-trained encoder weights into a downstream model: one checked path for every method.

A checkpoint's state dict may come from a DDP run (``module.`` keys), a compiled model
(``_orig_mod.``) or a whole model whose encoder sits under a prefix (``encoder.``, or a STELAR
``target_encoder.``); :func:`load_encoder_state` strips those, checks that the keys and shapes
fit the target module exactly, and raises a ``ValueError`` that lists what does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..utils import get_logger

log = get_logger("models")

__all__ = ["load_encoder_state", "strip_wrappers"]


def strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes."""
    out = dict(state)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def load_encoder_state(module: nn.Module, state: Mapping[str, torch.Tensor], *,
                       prefix: str = "encoder.", what: str = "encoder",
                       hint: str = "was it pre-trained with another preset or switch?"
                       ) -> list[str]:
    """Load ``state`` (an encoder's, or a whole model's whose encoder is under ``prefix``) into
    ``module``; return the loaded keys.

    Raises
    ------
    ValueError
        On missing or unexpected keys and on shape mismatches, listing them, with ``hint``.
    """
    state = strip_wrappers(state)
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    target = module.state_dict()
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    mismatched = [f"{k}: model {tuple(target[k].shape)} vs checkpoint {tuple(state[k].shape)}"
                  for k in sorted(set(target) & set(state)) if target[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"The pre-trained weights do not fit the {what} ({hint}): missing keys "
                         f"{missing}; unexpected keys {unexpected}; shape mismatches "
                         f"{mismatched}.")
    module.load_state_dict(state)
    log.info("Loaded %d pre-trained %s tensors.", len(state), what)
    return sorted(state)
