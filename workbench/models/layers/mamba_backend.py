"""The optional fused kernels of the ``mamba_ssm`` package (CUDA, Triton), imported lazily.

:class:`~workbench.models.layers.mamba.Mamba2` and :class:`~workbench.models.layers.mamba.Mamba1`
take ``backend`` in :data:`BACKENDS`: ``"auto"`` hands their parameters to these kernels when
the package imports and the input is on CUDA, ``"torch"`` always runs the pure-PyTorch scans,
``"cuda"`` requires the kernels. Nothing here is imported at module load, so the workbench
imports on machines without CUDA, Triton or ``mamba_ssm``.

References
----------
.. [1] T. Dao and A. Gu, "Transformers are SSMs", ICML 2024, arXiv:2405.21060.
.. [2] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
   arXiv:2312.00752, 2023.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor

logger = logging.getLogger("workbench")

__all__ = ["BACKENDS", "mamba_ssm_available"]

BACKENDS = ("auto", "torch", "cuda")

_KERNELS: dict[str, Any] = {}


def _kernel(name: str):
    """Import one ``mamba_ssm`` kernel lazily; ``None`` when the package does not import."""
    if name not in _KERNELS:
        try:
            if name == "mamba2":
                import causal_conv1d  # noqa: F401  (the fused path convolves with it)
                from mamba_ssm.ops.triton.ssd_combined import (
                    mamba_split_conv1d_scan_combined as fn,
                )
            else:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as fn
        except Exception as err:  # ImportError, or CUDA/Triton errors at import time
            logger.debug("mamba_ssm kernel %r unavailable: %s", name, err)
            fn = None
        _KERNELS[name] = fn
    return _KERNELS[name]


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm``'s fused Mamba-2 and Mamba-1 kernels import on this machine."""
    return _kernel("mamba2") is not None and _kernel("mamba1") is not None


def _use_kernel(backend: str, name: str, u: Tensor, d_conv: int = 4) -> bool:
    """Whether a mixer with ``backend`` runs the fused kernel ``name`` on input ``u``; raises for
    ``backend="cuda"`` when it cannot."""
    if backend == "torch":
        return False
    available = _kernel(name) is not None and (name != "mamba2" or 2 <= d_conv <= 4)
    if backend == "cuda":
        if not u.is_cuda:
            raise ValueError(f"Invalid value for the 'backend' parameter: 'cuda' needs the input "
                             f"on a CUDA device, got a tensor on {u.device}; use 'auto'.")
        if not available:
            raise ImportError("backend='cuda' needs the optional 'mamba_ssm' and 'causal_conv1d' "
                              "packages (pip install 'workbench[gpu]') and, for Mamba-2, "
                              f"2 <= d_conv <= 4 (got {d_conv}). Use backend='auto'.")
        return True
    return u.is_cuda and available
