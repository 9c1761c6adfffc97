"""State-space layers in pure PyTorch: Mamba-2 (chunked SSD) and Mamba-1 (selective scan).

One import point for the state-space family, which lives in one module per concept:

=====================================  ===========================================================
module                                 contents
=====================================  ===========================================================
:mod:`~workbench.models.layers.ssd`    ``ssd_chunked`` (Mamba-2 scan) and its twin ``ssd_naive``
:mod:`.selective_scan`                 ``selective_scan`` (Mamba-1 scan), ``selective_scan_ref``
:mod:`.mamba`                          the ``Mamba2`` and ``Mamba1`` mixers, ``GatedRMSNorm``
:mod:`.mamba_backend`                  the optional fused ``mamba_ssm`` kernels, ``BACKENDS``
=====================================  ===========================================================

Both mixers run on the CPU and on any GPU. On a CUDA machine where the optional ``mamba_ssm``
package imports, ``backend="auto"`` (or ``"cuda"``) hands the same parameters to its fused
kernels; the parameter names and shapes are those of ``mamba_ssm.modules.mamba2.Mamba2`` and
``mamba_ssm.modules.mamba_simple.Mamba``, so state dicts move between the two.

Every fast path has a slow twin that the tests compare against:

=================  ====================================================================
fast               reference
=================  ====================================================================
``ssd_chunked``    ``ssd_naive`` (step-by-step recurrence); the paper's Listing 1 is the
                   benchmark peer in ``benchmarks/ssd_minimal.py``
``selective_scan`` ``selective_scan_ref`` (loop over time)
``Mamba2.forward`` ``Mamba2.step`` applied token by token
``Mamba1.forward`` ``Mamba1.step`` applied token by token
=================  ====================================================================

References
----------
.. [1] T. Dao and A. Gu, "Transformers are SSMs: Generalized models and efficient algorithms
   through structured state space duality", ICML 2024, arXiv:2405.21060.
.. [2] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
   arXiv:2312.00752, 2023.
"""

from __future__ import annotations

from workbench.models.layers.mamba import GatedRMSNorm, Mamba1, Mamba2
from workbench.models.layers.mamba_backend import BACKENDS, mamba_ssm_available
from workbench.models.layers.selective_scan import selective_scan, selective_scan_ref
from workbench.models.layers.ssd import ssd_chunked, ssd_naive

__all__ = [
    "BACKENDS",
    "GatedRMSNorm",
    "Mamba1",
    "Mamba2",
    "mamba_ssm_available",
    "selective_scan",
    "selective_scan_ref",
    "ssd_chunked",
    "ssd_naive",
]
