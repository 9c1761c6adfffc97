"""Methods: what a notebook parameter ``method="omfa"`` selects.

A :class:`~workbench.methods.base.Method` names a method's pre-training model and objective,
its fine-tuning model, its ablation variants (each one config switch) and the paper's numbers.
The drivers in :mod:`workbench.experiments` run any registered method, so the stage notebooks
(pre-train, fine-tune, ablations, embeddings) are written once.
"""

from .base import (
           MODES,
           Method,
           PaperResult,
           Variant,
           get_method,
           list_methods,
           register_method,
           variant_table,
)

__all__ = ["MODES", "Method", "PaperResult", "Variant", "get_method", "list_methods", "register_method",
           "variant_table"]
